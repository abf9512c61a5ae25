//! `sitewatch-bridge check --online`: after the file is valid, reach each
//! service the bridge needs, one step at a time, and say in plain words
//! what is wrong: the broker (TCP, TLS, CONNECT accepted), PostgreSQL (TLS
//! as configured, schema version, the right to write) and Loki (the push
//! endpoint answers and accepts the credentials).
//!
//! The broker step connects with its own client id (`<client_id>-check`)
//! and a clean, non-persistent session, so it never touches the running
//! bridge's session or takes a message from it. The Loki step pushes an
//! empty request, which stores nothing.

use std::time::Duration;

use anyhow::Context as _;
use rumqttc::v5::mqttbytes::v5::{ConnectReturnCode, Packet};
use rumqttc::v5::{AsyncClient, Event, MqttOptions};

use crate::config::Config;
use crate::sink::loki::client::{Answer, LokiClient};

/// One step of the check: what was tried and how it went.
#[derive(Debug)]
pub struct Step {
    /// What was tried, e.g. "broker".
    pub name: &'static str,
    /// What worked, or what is wrong and what to do.
    pub result: Result<String, String>,
}

/// Runs every step (each is tried even if an earlier one failed: they are
/// independent services).
pub async fn check(config: &Config) -> Vec<Step> {
    let mut steps = vec![
        Step {
            name: "broker",
            result: broker(config).await,
        },
        Step {
            name: "postgres",
            result: postgres(config).await,
        },
    ];
    if config.loki.is_some() {
        steps.push(Step {
            name: "loki",
            result: loki(config).await,
        });
    }
    steps
}

async fn broker(config: &Config) -> Result<String, String> {
    let url = config.mqtt.url().map_err(|e| format!("{e:#}"))?;
    let mut opts = MqttOptions::new(
        format!("{}-check", config.client_id),
        url.host.clone(),
        url.port,
    );
    opts.set_transport(config.mqtt.transport().map_err(|e| format!("{e:#}"))?);
    if let Some((user, pass)) = config.mqtt.credentials().map_err(|e| format!("{e:#}"))? {
        opts.set_credentials(user, pass);
    }
    opts.set_clean_start(true);
    opts.set_keep_alive(Duration::from_secs(10));
    opts.set_connection_timeout(10);
    let (client, mut eventloop) = AsyncClient::new(opts, 4);
    let at = format!("{}:{}", url.host, url.port);
    let answer = tokio::time::timeout(Duration::from_secs(15), eventloop.poll()).await;
    let result = match answer {
        Err(_) => Err(format!(
            "{at}: no answer within 15 s (a firewall dropping packets, or not an MQTT port)"
        )),
        Ok(Err(rumqttc::v5::ConnectionError::ConnectionRefused(code))) => Err(refused(&at, code)),
        Ok(Err(e)) => Err(broker_words(&at, &format!("{e}"))),
        Ok(Ok(Event::Incoming(Packet::ConnAck(ack)))) => match ack.code {
            ConnectReturnCode::Success => Ok(format!(
                "{at}: connected{}",
                if url.tls { " over TLS" } else { "" }
            )),
            code => Err(refused(&at, code)),
        },
        Ok(Ok(other)) => Err(format!("{at}: unexpected first answer {other:?}")),
    };
    let _ = client.try_disconnect();
    result
}

fn refused(at: &str, code: ConnectReturnCode) -> String {
    match code {
        ConnectReturnCode::NotAuthorized | ConnectReturnCode::BadUserNamePassword => format!(
            "{at}: the broker refused this bridge's credentials ({code:?}): check \
             mqtt.username/password_file or the client certificate, and the ACL"
        ),
        code => format!("{at}: the broker refused the connection ({code:?})"),
    }
}

fn broker_words(at: &str, err: &str) -> String {
    let hint = if err.contains("refused") {
        "nothing listens there (is mosquitto running? the port right?)"
    } else if err.contains("certificate") || err.contains("Tls") || err.contains("tls") {
        "TLS failed: the broker's certificate must be signed by mqtt.ca_file and name the host"
    } else if err.contains("resolve") || err.contains("lookup") || err.contains("not known") {
        "the host name does not resolve"
    } else {
        "cannot connect"
    };
    format!("{at}: {hint} ({err})")
}

async fn postgres(config: &Config) -> Result<String, String> {
    let pg = &config.postgres;
    let client = crate::sink::postgres::connect(pg).await.map_err(|e| {
        let text = format!("{e:#}");
        let hint = if text.contains("invalid peer certificate") {
            "the server's certificate is not accepted with this sslmode/sslrootcert"
        } else if text.contains("password authentication failed") {
            "wrong password (postgres.password_file or the URL)"
        } else if text.contains("no pg_hba.conf entry") {
            "the server does not let this user in from here (pg_hba.conf; \
             \"no encryption\" means it wants TLS: set sslmode)"
        } else if text.contains("does not exist") {
            "the database or user does not exist"
        } else if text.contains("Connection refused") {
            "nothing listens there (is PostgreSQL running? the port right?)"
        } else {
            "cannot connect"
        };
        format!("{hint}: {text}")
    })?;
    let row = client
        .query_one(
            "SELECT coalesce((SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()), false), \
             current_setting('server_version'), \
             to_regclass('schema_migrations') IS NOT NULL",
            &[],
        )
        .await
        .map_err(|e| format!("{}: querying the server: {e:#}", pg.display))?;
    let (ssl, version, has_schema): (bool, String, bool) = (row.get(0), row.get(1), row.get(2));
    let tls = if ssl {
        format!("TLS, sslmode={}", pg.tls.mode.as_str())
    } else {
        format!("no TLS, sslmode={}", pg.tls.mode.as_str())
    };
    let known = crate::sink::migrations::MIGRATIONS
        .last()
        .map(|m| m.version)
        .unwrap_or(0);
    let schema = if has_schema {
        let current: Option<i32> = client
            .query_one("SELECT max(version) FROM schema_migrations", &[])
            .await
            .map_err(|e| format!("{}: reading schema_migrations: {e:#}", pg.display))?
            .get(0);
        current.unwrap_or(0)
    } else {
        0
    };
    let schema_words = match schema.cmp(&known) {
        std::cmp::Ordering::Equal => format!("schema {schema} (current)"),
        std::cmp::Ordering::Greater => {
            format!("schema {schema}, newer than this bridge ({known}): upgrade the bridge")
        }
        std::cmp::Ordering::Less if pg.migrate => {
            format!("schema {schema}; the bridge migrates it to {known} at start")
        }
        std::cmp::Ordering::Less => {
            return Err(format!(
                "{}: schema {schema} but this bridge needs {known} and has [postgres] \
                 migrate = false: run `sitewatch-bridge migrate` with the schema owner's account",
                pg.display
            ))
        }
    };
    if schema > 0 {
        let can_write: bool = client
            .query_one(
                "SELECT has_table_privilege(current_user, 'sites', 'INSERT')",
                &[],
            )
            .await
            .map_err(|e| format!("{}: checking privileges: {e:#}", pg.display))?
            .get(0);
        if !can_write {
            return Err(format!(
                "{}: this user may not write the tables (grant it the sitewatch_writer role; \
                 docs/ops.md, \"Least-privilege accounts\")",
                pg.display
            ));
        }
    }
    let mut words = format!(
        "{}: PostgreSQL {version}, {tls}, {schema_words}",
        pg.display
    );
    if let Some(w) = pg.tls_warning() {
        words.push_str("; warning: ");
        words.push_str(&w);
    }
    Ok(words)
}

async fn loki(config: &Config) -> Result<String, String> {
    let Some(settings) = &config.loki else {
        return Ok("not configured".into());
    };
    let client = LokiClient::new(settings)
        .context("setting up the Loki client")
        .map_err(|e| format!("{e:#}"))?;
    let empty = crate::sink::loki::proto::PushRequest::default();
    let body = crate::sink::loki::proto::encode_body(&empty)
        .map_err(|e| format!("encoding an empty push: {e}"))?;
    let at = client.display().to_owned();
    match client.push(body.into()).await {
        Answer::Accepted => Ok(format!("{at}: push endpoint accepts this bridge")),
        // Loki answers an empty push after it checked the tenant and the
        // credentials: a validation refusal means everything before it
        // passed.
        Answer::Refused { status, text } if status == 400 || status == 422 => Ok(format!(
            "{at}: push endpoint reached, credentials accepted (an empty test push: {status} {})",
            text.chars().take(80).collect::<String>()
        )),
        Answer::Refused { status, text } => Err(format!("{at}: refused with {status}: {text}")),
        Answer::Retry {
            status: Some(s @ (401 | 403)),
            why,
            ..
        } => Err(format!(
            "{at}: Loki refused the credentials ({s}): set loki.tenant / the auth settings \
             ({why})"
        )),
        Answer::Retry {
            status: Some(404),
            why,
            ..
        } => Err(format!(
            "{at}: 404: not Loki's push endpoint (loki.url should end in /loki/api/v1/push) \
             ({why})"
        )),
        Answer::Retry { why, .. } => Err(format!("{at}: {why}")),
    }
}
