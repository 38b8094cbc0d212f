"""digest: a weekly newsletter digest builder and mailer."""

__version__ = "0.1.0"
