"""`python -m loopline.streams.cli`: the `loopline` command without its console script."""

from loopline.streams.cli import main

main()
