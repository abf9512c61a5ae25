//! Syslog receiver tests: the vendor corpus, and real senders (util-linux
//! `logger`, syslog-ng) against the real agent binary and a real broker.

mod corpus;
mod relay;
