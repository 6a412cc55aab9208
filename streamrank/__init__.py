"""StreamRank: the command-line entry (``streamrank``) over store/, feature_repo/, ranking/,
workers/ and api/."""
__version__ = "0.1.0"
