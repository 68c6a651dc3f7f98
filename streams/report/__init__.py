"""`loopline report`: one self-contained HTML page on how a task's loop is doing."""
