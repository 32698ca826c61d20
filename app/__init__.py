"""The cinstyle HTTP service and the `cinstyle` command line. No maths here."""
