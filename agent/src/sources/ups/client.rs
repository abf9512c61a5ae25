//! A NUT client over one TCP connection per round: optional login,
//! `LIST UPS` when no names are configured, `LIST VAR` per UPS, `LOGOUT`.
//! The whole round is bounded by `[ups] timeout_secs`; lines are bounded
//! by [`proto::MAX_LINE`].

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use super::config::UpsConfig;
use super::proto::{self, ListReader, ProtoError, Reading};

/// One UPS's result in a round.
#[derive(Debug, Clone, PartialEq)]
pub struct UpsResult {
    /// Its name in upsd.
    pub name: String,
    /// Its values, or why not (`ERR UNKNOWN-UPS`, `DATA-STALE`, ...).
    pub reading: Result<Reading, String>,
}

/// Reads every configured UPS once. `Err`: upsd could not be reached
/// or did not speak the protocol (plain words, no password).
pub async fn read_all(cfg: &UpsConfig) -> Result<Vec<UpsResult>, String> {
    match tokio::time::timeout(cfg.timeout, round(cfg)).await {
        Ok(r) => r,
        Err(_) => Err(format!(
            "upsd at {} did not answer within {} s",
            cfg.server,
            cfg.timeout.as_secs()
        )),
    }
}

struct Conn {
    io: BufReader<TcpStream>,
    line: Vec<u8>,
}

impl Conn {
    async fn send(&mut self, cmd: &str) -> Result<(), String> {
        self.io
            .get_mut()
            .write_all(format!("{cmd}\n").as_bytes())
            .await
            .map_err(|e| format!("cannot send to upsd: {e}"))
    }

    /// The next line, at most [`proto::MAX_LINE`] bytes.
    async fn next_line(&mut self) -> Result<String, String> {
        self.line.clear();
        let n = (&mut self.io)
            .take(proto::MAX_LINE as u64 + 1)
            .read_until(b'\n', &mut self.line)
            .await
            .map_err(|e| format!("cannot read from upsd: {e}"))?;
        if n == 0 {
            return Err("upsd closed the connection".into());
        }
        if self.line.last() != Some(&b'\n') {
            return Err(ProtoError::TooLong("line").to_string());
        }
        Ok(String::from_utf8_lossy(&self.line)
            .trim_end_matches(['\r', '\n'])
            .to_owned())
    }

    async fn list(&mut self, query: &[&str]) -> Result<Vec<Vec<String>>, ProtoError> {
        self.send(&format!("LIST {}", query.join(" ")))
            .await
            .map_err(ProtoError::Bad)?;
        let mut r = ListReader::new(query);
        loop {
            let line = self.next_line().await.map_err(ProtoError::Bad)?;
            if let Some(items) = r.line(&line)? {
                return Ok(items);
            }
        }
    }
}

async fn round(cfg: &UpsConfig) -> Result<Vec<UpsResult>, String> {
    let stream = TcpStream::connect(&cfg.server)
        .await
        .map_err(|e| format!("cannot connect to upsd at {}: {e}", cfg.server))?;
    let mut c = Conn {
        io: BufReader::new(stream),
        line: Vec::new(),
    };
    if let Some(login) = &cfg.login {
        c.send(&format!("USERNAME {}", proto::quote(&login.username)))
            .await?;
        proto::expect_ok(&c.next_line().await?).map_err(|e| format!("USERNAME refused: {e}"))?;
        c.send(&format!("PASSWORD {}", proto::quote(&login.password)))
            .await?;
        proto::expect_ok(&c.next_line().await?).map_err(|e| format!("PASSWORD refused: {e}"))?;
    }
    let names = if cfg.names.is_empty() {
        let items = c
            .list(&["UPS"])
            .await
            .map_err(|e| format!("LIST UPS: {e}"))?;
        let mut n = proto::ups_names(&items);
        n.truncate(super::config::MAX_UPS);
        n
    } else {
        cfg.names.clone()
    };
    let mut out = Vec::with_capacity(names.len());
    for name in names {
        let reading = match c.list(&["VAR", &name]).await {
            Ok(items) => Ok(Reading::from_vars(&name, &items)),
            // upsd answers ERR and carries on: the next UPS can still be read.
            Err(e @ ProtoError::Server(_)) => Err(e.to_string()),
            Err(e) => return Err(format!("LIST VAR {name}: {e}")),
        };
        out.push(UpsResult { name, reading });
    }
    // Courtesy only; the connection is dropped either way.
    let _ = c.send("LOGOUT").await;
    Ok(out)
}
