"""Visual question answering (paper sec. 5.3): data, the answer decoder's inference, VQA accuracy, the stage."""
