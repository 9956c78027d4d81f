"""NLVR2 (paper sec. 5.4): is a statement true of a pair of images? Data, the stage, accuracy."""
