"""What a source says: sentences and content words, the kinds of fact a question asks, and the support check
that decides whether a sentence is supported by the source it cites."""
