"""digest.yaml's `delivery` (transports: SendGrid, SMTP, DKIM) and `web` sections."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from digest.config.base import Model


class SendGridSettings(Model):
    host: str = Field("https://api.sendgrid.com", description="API host (EU: api.eu.sendgrid.com).")
    api_key_env: str = Field("SENDGRID_API_KEY", description="Environment variable with the key.")
    timeout: float = Field(30.0, gt=0, le=300, description="Seconds per HTTP request.")
    sandbox: bool = Field(False, description="Validate only; SendGrid delivers nothing.")
    categories: list[str] = Field(default_factory=list, description="Categories on every send.")
    cancel_margin_seconds: int = Field(
        600,
        ge=1,
        description="SendGrid withholds a cancelled batch only when cancelled at least this "
        "long before its send time.",
    )
    strict_lead_seconds: int = Field(
        660,
        ge=2,
        le=72 * 3600,
        description="Strict mode: each request is scheduled this far ahead, so a request in "
        "doubt can still be cancelled; must exceed cancel_margin_seconds.",
    )

    @model_validator(mode="after")
    def _lead_after_margin(self) -> SendGridSettings:
        if self.strict_lead_seconds <= self.cancel_margin_seconds:
            raise ValueError(
                f"strict_lead_seconds ({self.strict_lead_seconds}) must be greater than "
                f"cancel_margin_seconds ({self.cancel_margin_seconds})"
            )
        return self


class SmtpSettings(Model):
    host: str = Field("127.0.0.1", description="SMTP server.")
    port: int = Field(587, ge=1, le=65535, description="SMTP port.")
    security: Literal["starttls", "tls", "none"] = Field("starttls", description="TLS mode.")
    username_env: str = Field("SMTP_USERNAME", description="Environment variable with the login.")
    password_env: str = Field(
        "SMTP_PASSWORD", description="Environment variable with the password."
    )
    timeout: float = Field(30.0, gt=0, le=300, description="Seconds per SMTP operation.")
    connections: int = Field(
        4, ge=1, le=32, description="Connections used at once; each sends one message at a time."
    )
    pipelining: bool = Field(
        True,
        description="Send MAIL, RCPT and DATA in one write when the server offers PIPELINING "
        "(RFC 2920); off: wait for each answer.",
    )
    ca_file: str | None = Field(
        None, description="PEM file of a private CA to trust, relative to digest.yaml."
    )


class DkimSettings(Model):
    domain: str = Field(description="Signing domain (d=); usually the sender's domain.")
    selector: str = Field(description="Selector (s=): the key is published at S._domainkey.D.")
    key_file: str | None = Field(
        None, description="PEM private key file, relative to digest.yaml; else from key_env."
    )
    key_env: str = Field(
        "DKIM_PRIVATE_KEY", description="Environment variable holding the PEM private key."
    )


class Delivery(Model):
    transport: Literal["outbox", "smtp", "sendgrid"] = Field(
        "outbox", description="Default transport."
    )
    outbox_dir: str = Field("outbox", description="Folder for the outbox transport.")
    batch_size: int = Field(
        1000,
        ge=1,
        le=1000,
        description="Deliveries per batch: one provider request (SendGrid allows 1000).",
    )
    max_attempts: int = Field(5, ge=1, le=20, description="Tries per batch on retryable faults.")
    max_retry_seconds: float = Field(300.0, gt=0, description="Total time spent waiting to retry.")
    in_flight: int = Field(
        1,
        ge=1,
        le=8,
        description="SendGrid requests in flight at once (and `digest worker`'s default "
        "concurrency); a crash or a lost answer can then leave up to this many batches in "
        "doubt (strict mode still cancels each).",
    )
    max_failed_batches: int = Field(
        5,
        ge=1,
        le=1000,
        description="Stop the run after this many batches in a row failed for every recipient.",
    )
    sendgrid: SendGridSettings = Field(default_factory=SendGridSettings)  # type: ignore[arg-type]
    smtp: SmtpSettings = Field(default_factory=SmtpSettings)  # type: ignore[arg-type]
    dkim: DkimSettings | None = Field(
        None, description="DKIM-sign SMTP and outbox messages; unset: no signature."
    )


class Web(Model):
    webhook_public_key: str | None = Field(
        None, description="SendGrid Event Webhook verification key (base64 DER, P-256)."
    )
    webhook_max_age: int = Field(600, ge=1, description="Oldest accepted webhook timestamp, s.")
    threads: int = Field(
        4, ge=1, le=256, description="Worker threads of `digest serve` (waitress)."
    )
    processes: int = Field(
        1,
        ge=1,
        le=64,
        description="Processes of `digest serve` sharing its port, each with `threads` "
        "threads (one per core lets busy pages use every core; one-click bursts need one).",
    )
    connection_limit: int = Field(
        1000, ge=1, description="Open connections `digest serve` accepts at once (waitress: 100)."
    )
    write_wait: float = Field(
        10.0,
        gt=0,
        le=600,
        description="Seconds an unsubscribe waits for a database another command holds "
        "locked before answering 503 (nothing changed).",
    )
