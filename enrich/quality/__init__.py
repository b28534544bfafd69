"""What is checked of a generated text, row by row: the quality flags and the claim checker (claims, product
types, faithful training targets), with its vocabularies."""
