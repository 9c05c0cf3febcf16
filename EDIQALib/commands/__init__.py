"""The ``ediqa`` subcommands, one module per group; ``EDIQALib.cli`` parses the command line and calls them."""
