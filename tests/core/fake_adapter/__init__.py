"""A minimal adapter that follows the file plan, to test the kit's command line on its own."""

CALLS: list = []
