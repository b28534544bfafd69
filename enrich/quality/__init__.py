"""Quality checks of generated text that need more than one line of code: claims, types, faithful targets."""
