"""The trainer: corrections in, new students out, through the evaluation gate."""
