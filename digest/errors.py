"""One root error; each subclass carries the facts a user needs to fix the problem."""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    """Process exit codes, listed in the README."""

    OK = 0
    ERROR = 1  # a run-time failure: store, network, a provider refusing the whole run
    BAD_INPUT = 2  # config, template, source or subscriber file is invalid; usage errors
    DELIVERY_FAILED = 3  # the run finished but some deliveries failed (see the summary)
    PROVIDER_REFUSED = 4  # the provider refused the account, or N batches in a row failed
    BUSY = 5  # another command held the store or the edition for too long; run again
    PREFLIGHT_FAILED = 6  # preflight found an error: nothing was sent
    INTERRUPTED = 130


class DigestError(Exception):
    """Root of every error the CLI reports in one line (plus an optional hint)."""

    exit_code: ExitCode = ExitCode.ERROR

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message


class InputError(DigestError):
    """Bad input in a file: names the file, the line or key path, and the reason."""

    exit_code = ExitCode.BAD_INPUT

    def __init__(
        self,
        path: str,
        reason: str,
        *,
        line: int | None = None,
        key: str | None = None,
        hint: str | None = None,
    ) -> None:
        where = str(path)
        if line is not None:
            where += f":{line}"
        if key:
            where += f": {key}"
        super().__init__(f"{where}: {reason}", hint=hint)
        self.path = str(path)
        self.line = line
        self.key = key
        self.reason = reason


class ConfigError(InputError):
    """digest.yaml is invalid, or names something that does not exist."""


class TemplateError(InputError):
    """An email template does not compile or render."""


class SourceError(InputError):
    """One article source could not be read; the other sources still ingest."""


class SubscriberError(InputError):
    """A subscriber row or address is invalid."""


class UsageError(DigestError):
    """The command was asked for something that cannot be done as asked."""

    exit_code = ExitCode.BAD_INPUT


class NotFoundError(DigestError):
    """A named edition, subscriber or digest does not exist."""

    exit_code = ExitCode.BAD_INPUT


class TransportError(DigestError):
    """A transport could not deliver; what the failure proves is in the flags (see SendResult)."""

    def __init__(
        self,
        message: str,
        *,
        retryable: bool,
        hint: str | None = None,
        in_doubt: bool = False,
        fatal: bool = False,
    ) -> None:
        super().__init__(message, hint=hint)
        self.retryable = retryable
        self.in_doubt = in_doubt
        self.fatal = fatal


class ProviderRefusedError(DigestError):
    """The provider refused the account (or every batch in a row): the run stopped at once.

    Rows not yet delivered stay pending; fix the cause and run the same command again.
    """

    exit_code = ExitCode.PROVIDER_REFUSED


class BusyError(DigestError):
    """The store stayed locked by another command past the wait bound; nothing was lost."""

    exit_code = ExitCode.BUSY


class PreflightError(DigestError):
    """Preflight checks found an error, so the edition is not sent."""

    exit_code = ExitCode.PREFLIGHT_FAILED
