"""The command line. Exit codes: 0 success, 1 runtime failure, 2 bad input or configuration,
3 a verification failure (for example a broken receipt chain), 130 interrupted."""
