"""The learning loop's pure logic: corrections into training and evaluation sets, and the
gate that decides whether a new student replaces the one in production. No I/O."""
