-- sitewatch bridge schema, version 13: the uplink interface's counters
-- that heartbeats carry (`wan` in docs/wire.md), as columns of
-- `heartbeats`.
--
-- Why columns of `heartbeats` and not a table of their own: they come in
-- the heartbeat, one set per message, so they share its identity,
-- partitions and retention (`heartbeats_days`), and storing them costs no
-- statement more per batch. NULL: the agent sent none (older agent,
-- `wan_interface = "off"`, no default route). The counters are the
-- kernel's, monotonic until the interface is re-created or the gateway
-- reboots; dashboards compute rates between consecutive heartbeats of one
-- boot and interface and skip a decrease (a reset). Stored as bigint: a
-- counter above 2^63 (never seen; 292 years at 1 GB/s) is clamped.
--
-- Adding nullable columns without a default only changes the catalog, on
-- the partitioned parent and every partition alike: no rewrite.
ALTER TABLE heartbeats
    ADD COLUMN wan_if text,
    ADD COLUMN wan_rx_bytes bigint,
    ADD COLUMN wan_tx_bytes bigint,
    ADD COLUMN wan_rx_errors bigint,
    ADD COLUMN wan_tx_errors bigint,
    ADD COLUMN wan_rx_dropped bigint,
    ADD COLUMN wan_tx_dropped bigint;
