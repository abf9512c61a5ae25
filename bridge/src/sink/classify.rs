//! Which database errors are worth retrying.
//!
//! The decision is a small pure function ([`classify_parts`]) so it can be
//! unit-tested without a database; [`classify`] extracts its inputs from a
//! `tokio_postgres::Error`.
//!
//! Policy: only errors caused by the *data of a message* are [`Poison`]
//! (SQLSTATE classes 22 data exception, 23 integrity constraint, 54
//! program limit exceeded, and client-side parameter encoding errors).
//! They send the batch through one-message-at-a-time isolation, and the
//! offending message to `rejected_messages` as `db_error`. Everything else
//! (lost connections, timeouts, deadlocks, serialization failures, the
//! server shutting down, and also schema or permission problems, which
//! an operator must fix) is [`Retriable`]: the batch is retried
//! unchanged and nothing is acknowledged meanwhile, so the broker keeps
//! the messages. Blocking is preferred to storing good data as rejected.
//!
//! [`Poison`]: ErrorClass::Poison
//! [`Retriable`]: ErrorClass::Retriable

/// What to do about a failed database operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    /// Retry the same batch later (after reconnecting).
    Retriable,
    /// A message's data is at fault: isolate it and reject it.
    Poison,
}

/// Decides from the parts of an error: the SQLSTATE if the server sent
/// one, whether the connection is closed, and whether the error came from
/// encoding a parameter on the client side.
pub fn classify_parts(sqlstate: Option<&str>, closed: bool, encode_error: bool) -> ErrorClass {
    if closed {
        return ErrorClass::Retriable;
    }
    if let Some(code) = sqlstate {
        return match code.get(..2) {
            Some("22" | "23" | "54") => ErrorClass::Poison,
            _ => ErrorClass::Retriable,
        };
    }
    if encode_error {
        ErrorClass::Poison
    } else {
        ErrorClass::Retriable
    }
}

/// Classifies a `tokio_postgres::Error`.
pub fn classify(e: &tokio_postgres::Error) -> ErrorClass {
    let sqlstate = e.code().map(|c| c.code());
    // tokio-postgres has no public kind for "error serializing parameter";
    // its Display is stable across 0.7.x.
    let encode_error = e.to_string().starts_with("error serializing parameter");
    classify_parts(sqlstate, e.is_closed(), encode_error)
}

/// Whether an error is about reaching the server rather than about the
/// statement: lost or refused connection, I/O error, timeout, server
/// shutting down, too many connections, serialization failure or
/// deadlock. Migrations treat every other failure as fatal.
pub fn is_transient_parts(sqlstate: Option<&str>, closed: bool) -> bool {
    if closed {
        return true;
    }
    match sqlstate {
        None => true,
        Some(code) => matches!(code.get(..2), Some("08" | "40" | "53" | "57" | "58")),
    }
}

/// [`is_transient_parts`] for a `tokio_postgres::Error`.
pub fn is_transient(e: &tokio_postgres::Error) -> bool {
    is_transient_parts(e.code().map(|c| c.code()), e.is_closed())
}

#[cfg(test)]
mod tests {
    use super::*;
    use ErrorClass::{Poison, Retriable};

    #[test]
    fn classes() {
        let cases: &[(Option<&str>, bool, bool, ErrorClass)] = &[
            // Lost connection, whatever else is said.
            (None, true, false, Retriable),
            (Some("22P05"), true, false, Retriable),
            // I/O error, timeout while connecting.
            (None, false, false, Retriable),
            // connection_exception, admin_shutdown, cannot_connect_now.
            (Some("08006"), false, false, Retriable),
            (Some("57P01"), false, false, Retriable),
            (Some("57P03"), false, false, Retriable),
            // serialization_failure, deadlock_detected.
            (Some("40001"), false, false, Retriable),
            (Some("40P01"), false, false, Retriable),
            // disk_full, too_many_connections, query_canceled.
            (Some("53100"), false, false, Retriable),
            (Some("53300"), false, false, Retriable),
            (Some("57014"), false, false, Retriable),
            // undefined_table, insufficient_privilege: an operator's job.
            (Some("42P01"), false, false, Retriable),
            (Some("42501"), false, false, Retriable),
            // Data: NUL in text, out of range, not-null, check, too big.
            (Some("22021"), false, false, Poison),
            (Some("22P05"), false, false, Poison),
            (Some("22003"), false, false, Poison),
            (Some("23502"), false, false, Poison),
            (Some("23514"), false, false, Poison),
            (Some("54000"), false, false, Poison),
            // Client-side encoding of a parameter.
            (None, false, true, Poison),
        ];
        for &(code, closed, encode, want) in cases {
            assert_eq!(
                classify_parts(code, closed, encode),
                want,
                "{code:?} {closed} {encode}"
            );
        }
    }

    #[test]
    fn transient() {
        assert!(is_transient_parts(None, false));
        assert!(is_transient_parts(Some("42P01"), true));
        for code in ["08006", "40P01", "53300", "57P01", "58030"] {
            assert!(is_transient_parts(Some(code), false), "{code}");
        }
        for code in ["42703", "42501", "22021", "XX000"] {
            assert!(!is_transient_parts(Some(code), false), "{code}");
        }
    }
}
