"""Language models on chip: corpora and vocabularies (:mod:`.corpus`), perplexity
stage by stage (:mod:`.evaluate`), the LM report (:mod:`.report`), running a
compiled EGRU language model bundle on text (:mod:`.host`), and what a target
declares for language models (:mod:`.target`)."""
