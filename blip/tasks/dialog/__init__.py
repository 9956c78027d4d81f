"""Visual dialog (paper sec. 5.5): ranking 100 candidate answers with ITM, given the image, its caption and the
history."""
