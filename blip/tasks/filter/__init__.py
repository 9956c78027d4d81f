"""CapFilt's filter: the retrieval model (ITC + ITM) fine-tuned on human captions; and Table 4's shared
captioner-filter, one model trained with ITC, ITM and LM at once."""
