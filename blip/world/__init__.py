"""The built-in world: a data source of seeded scenes of shapes, with known caption noise.

It writes the product's input formats (a Karpathy JSON with images, img2dataset web shards, each transfer
task's datasets) and keeps its truth beside them. Only the command line chooses it, for a source params leave
unset; the pipeline's library never imports it (tests/test_structure.py checks), so it runs on real data alike.
"""
