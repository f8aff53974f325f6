"""Audio sources: the Source base class every source builds on, and one module or package per source."""
