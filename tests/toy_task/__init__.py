"""A toy task, laid out as a new task folder under blip/tasks/ would be: its model (model.py), its training
inputs (training.py), its stage that fine-tunes and scores (stage.py), its code's hooks (hooks.py), and its
registry entry with its params section (task.py: presets.<preset>.finetune_toy).

The task: does the caption describe this image? Each image is paired with its own caption (1) and with the
next image's caption in the batch (0); a fresh linear head on the image-grounded encoder's [ENC] says which.
Nothing outside this folder changes for it but the line that lists it in the registry (__main__.py adds it
the way blip/tasks/registry.py lists the others) and its section in params.yaml; tests/test_toy_task.py
writes that section, trains the task for a few steps and scores it.
"""
