-- sitewatch bridge schema, version 2: syslog batches delivered to Loki.
--
-- The log lines themselves live in Grafana Loki; PostgreSQL only keeps
-- which `log` messages were delivered, so that a redelivered message is
-- not pushed again, and so that `boots` counts them like any other kind.

-- One row per `log` message (site, boot, seq) pushed to Loki. Written in
-- the same transaction as the rest of its batch, after Loki accepted the
-- push and before the MQTT acknowledgement.
CREATE TABLE log_batches (
    site        text NOT NULL,
    boot        text NOT NULL,
    seq         bigint NOT NULL,
    -- Agent timestamp of the batch.
    ts          timestamptz NOT NULL,
    received_at timestamptz NOT NULL DEFAULT now(),
    -- Lines Loki accepted.
    records     integer NOT NULL,
    -- Lines Loki refused (the message is then also in rejected_messages
    -- with reason 'loki_rejected').
    rejected    integer NOT NULL DEFAULT 0,
    -- When the bridge recorded the delivery (its transaction time).
    pushed_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (site, boot, seq)
);
CREATE INDEX log_batches_site_received ON log_batches (site, received_at DESC);

COMMENT ON COLUMN rejected_messages.reason IS
    'sitewatch_wire::DecodeError::reason(), db_error, loki_rejected (Loki refused lines of a log batch) or no_log_sink (log batch received while no [loki] is configured)';
