"""The fake adapter's harness: the kit's file plan."""
