//! Command line and environment: every option is a flag and a `MART_*` variable.

use std::net::SocketAddr;
use std::path::PathBuf;

use secrecy::{ExposeSecret, SecretString};
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use mart_schema::Service;

/// Reads a secret option: kept as a `SecretString`, so that no `Debug` of
/// the options (a log line, a panic) ever shows it.
fn secret(value: &str) -> Result<SecretString, std::convert::Infallible> {
    Ok(SecretString::from(value))
}

#[derive(Debug, Parser)]
#[command(
    name = "mart",
    version,
    about = "mart: an event-driven commerce backend, one node of a cluster"
)]
pub struct Cli {
    #[command(flatten)]
    pub node: NodeOptions,
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the node (the default).
    Serve,
    /// Apply pending database migrations of the hosted services, then exit.
    Migrate,
    /// Measure mart against references taken in the same run: reservations vs a
    /// plain UPDATE, the edge vs a bare route and raw SQL, the Kafka mirror's lag,
    /// entity actors' memory vs bare ractor actors (in scratch databases on the
    /// configured or embedded server).
    Bench(crate::bench::BenchOptions),
    /// `mart bench`'s reference for entity actors, run in a process of its
    /// own: starts `count` bare ractor actors and prints the bytes each added.
    #[command(hide = true)]
    BenchBareActors {
        /// How many actors to start.
        count: usize,
    },
    /// Run librdkafka's mock Kafka cluster on loopback for development (not durable).
    KafkaDevBroker,
    /// Run mart's Stripe test server on its own.
    StripeTestServer(StripeTestServerOptions),
    /// Load a small demo catalog (products with stock), an admin and a shopper;
    /// running it again changes nothing. New passwords are printed once.
    Seed,
    /// Administer accounts.
    Admin {
        #[command(subcommand)]
        action: AdminAction,
    },
}

#[derive(Debug, Subcommand)]
pub enum AdminAction {
    /// Create an admin account (or promote an existing one with this email).
    Create {
        #[arg(long)]
        email: String,
        /// Read the password from standard input (first line).
        #[arg(long, required = true)]
        password_stdin: bool,
        /// With no DATABASE_URL, start a new embedded database if the data
        /// directory has none (otherwise refused: from the wrong directory
        /// this would make an admin the running node never sees).
        #[arg(long)]
        create_data_dir: bool,
    },
}

#[derive(Debug, Clone, Args)]
pub struct NodeOptions {
    /// This node's name in the cluster.
    #[arg(
        help_heading = "Node",
        long,
        env = "MART_NODE_NAME",
        global = true,
        default_value = "mart"
    )]
    pub node_name: String,

    /// Services this node hosts: a comma list, `all` or `none`.
    #[arg(help_heading = "Node", long, env = "MART_SERVICES", global = true, default_value = "all", value_parser = parse_services)]
    pub services: Hosting,

    /// Where the REST edge listens, or `none` for no edge.
    #[arg(help_heading = "Node", long, env = "MART_HTTP_ADDR", global = true, default_value = "127.0.0.1:8080", value_parser = parse_http_addr)]
    pub http_addr: HttpAddr,

    /// Where this node listens for cluster peers (host:port). Unset: no clustering.
    #[arg(help_heading = "Cluster", long, env = "MART_CLUSTER_ADDR", global = true, value_parser = parse_socket_addr)]
    pub cluster_addr: Option<SocketAddr>,

    /// The host peers dial to reach this node. Default: the --cluster-addr IP,
    /// or this machine's hostname when that IP is unspecified (0.0.0.0).
    #[arg(
        help_heading = "Cluster",
        long,
        env = "MART_CLUSTER_ADVERTISE",
        global = true
    )]
    pub cluster_advertise: Option<String>,

    /// Peers to join, comma-separated host:port; any live member is enough.
    #[arg(
        help_heading = "Cluster",
        long,
        env = "MART_PEERS",
        global = true,
        value_delimiter = ','
    )]
    pub peers: Vec<String>,

    /// PEM certificate of this node, for TLS between nodes (with the key and CA).
    #[arg(
        help_heading = "Cluster",
        long,
        env = "MART_CLUSTER_TLS_CERT",
        global = true
    )]
    pub cluster_tls_cert: Option<PathBuf>,

    /// PEM private key of this node's certificate.
    #[arg(
        help_heading = "Cluster",
        long,
        env = "MART_CLUSTER_TLS_KEY",
        global = true
    )]
    pub cluster_tls_key: Option<PathBuf>,

    /// PEM CA that signed every node's certificate; peers must present one.
    #[arg(
        help_heading = "Cluster",
        long,
        env = "MART_CLUSTER_TLS_CA",
        global = true
    )]
    pub cluster_tls_ca: Option<PathBuf>,

    /// Shared secret every node of the cluster must present.
    #[arg(help_heading = "Cluster", value_parser = secret, long, env = "MART_COOKIE", global = true, hide_env_values = true)]
    pub cookie: Option<SecretString>,

    /// Where the embedded PostgreSQL, generated secrets and mail files live.
    #[arg(
        help_heading = "Node",
        long,
        env = "MART_DATA_DIR",
        global = true,
        default_value = ".mart"
    )]
    pub data_dir: PathBuf,

    /// PostgreSQL for every service; `MART_<SERVICE>_DATABASE_URL` overrides per
    /// service. Unset: a private PostgreSQL in the data directory.
    #[arg(help_heading = "Database", value_parser = secret, long, env = "DATABASE_URL", global = true, hide_env_values = true)]
    pub database_url: Option<SecretString>,

    /// HS256 secret for access tokens; the same on every node.
    #[arg(help_heading = "Accounts and tokens", value_parser = secret, long, env = "MART_JWT_SECRET", global = true, hide_env_values = true)]
    pub jwt_secret: Option<SecretString>,

    /// How tokens are signed: `hs256` with `--jwt-secret` (one secret every
    /// node shares), or `eddsa` with Ed25519 keys whose public halves are
    /// served at `/.well-known/jwks.json`.
    #[arg(help_heading = "Accounts and tokens", long, env = "MART_JWT_ALGORITHM", global = true, default_value = "hs256", value_parser = ["hs256", "eddsa"])]
    pub jwt_algorithm: String,

    /// EdDSA: the Ed25519 private key that signs (PEM or PKCS#8 DER file).
    /// Unset: one generated into the data directory (one node only).
    #[arg(
        help_heading = "Accounts and tokens",
        long,
        env = "MART_JWT_KEY_FILE",
        global = true
    )]
    pub jwt_key_file: Option<PathBuf>,

    /// EdDSA: earlier signing keys (comma-separated files) whose tokens still
    /// verify during a rotation; drop one once its last token has expired.
    #[arg(
        help_heading = "Accounts and tokens",
        long,
        env = "MART_JWT_PREVIOUS_KEY_FILES",
        global = true,
        value_delimiter = ','
    )]
    pub jwt_previous_key_files: Vec<PathBuf>,

    /// How long an access token is valid (humantime: `60m`, `1h`).
    #[arg(help_heading = "Accounts and tokens", long, env = "MART_TOKEN_TTL", global = true, default_value = "60m", value_parser = humantime::parse_duration)]
    pub token_ttl: Duration,

    /// How long an unpaid order holds its stock before it expires (humantime).
    #[arg(help_heading = "Orders and payments", long, env = "MART_RESERVATION_TTL", global = true, default_value = "30m", value_parser = humantime::parse_duration)]
    pub reservation_ttl: Duration,

    /// Stripe secret key. Unset: mart runs its own Stripe test server in-process.
    #[arg(help_heading = "Orders and payments", value_parser = secret,
        long,
        env = "MART_STRIPE_SECRET_KEY",
        global = true,
        hide_env_values = true
    )]
    pub stripe_secret_key: Option<SecretString>,

    /// Stripe's API base URL (for a Stripe test server elsewhere).
    #[arg(
        help_heading = "Orders and payments",
        long,
        env = "MART_STRIPE_API_BASE",
        global = true
    )]
    pub stripe_api_base: Option<String>,

    /// Webhook signing secrets, comma-separated (several during a rotation).
    #[arg(help_heading = "Orders and payments", value_parser = secret,
        long,
        env = "MART_STRIPE_WEBHOOK_SECRET",
        global = true,
        value_delimiter = ',',
        hide_env_values = true
    )]
    pub stripe_webhook_secret: Vec<SecretString>,

    /// The URL shoppers' browsers reach this edge at (for Stripe's redirects).
    /// Default: http://<--http-addr>.
    #[arg(help_heading = "Orders and payments", long, env = "MART_PUBLIC_URL", global = true, value_parser = parse_public_url)]
    pub public_url: Option<String>,

    /// Where shoppers land after paying, instead of the edge's own page (a
    /// storefront's order page): `{ORDER_ID}` becomes the order's id and
    /// `{CHECKOUT_SESSION_ID}` Stripe's session id
    #[arg(help_heading = "Orders and payments", long, env = "MART_CHECKOUT_SUCCESS_URL", global = true, value_parser = parse_return_url)]
    pub checkout_success_url: Option<String>,

    /// Where shoppers land after cancelling at Checkout (same placeholders)
    #[arg(help_heading = "Orders and payments", long, env = "MART_CHECKOUT_CANCEL_URL", global = true, value_parser = parse_return_url)]
    pub checkout_cancel_url: Option<String>,

    /// Pending payments older than this are settled by asking Stripe (humantime).
    #[arg(help_heading = "Orders and payments", long, env = "MART_PAYMENT_RECONCILE_AFTER", global = true, default_value = "2m", value_parser = humantime::parse_duration)]
    pub payment_reconcile_after: Duration,

    /// SMTP server: `smtp://host:port`, `smtps://user:pass@host`, or with
    /// `?tls=required` for STARTTLS. Unset: `.eml` files under the data directory.
    #[arg(help_heading = "Mail", value_parser = secret, long, env = "MART_SMTP_URL", global = true, hide_env_values = true)]
    pub smtp_url: Option<SecretString>,

    /// Sender of every email.
    #[arg(
        help_heading = "Mail",
        long,
        env = "MART_MAIL_FROM",
        global = true,
        default_value = "mart <noreply@mart.localhost>"
    )]
    pub mail_from: String,

    /// Kafka bootstrap servers for the bridge, or `embedded` for an in-process
    /// mock cluster. Unset: the bridge is off and the outboxes keep every event.
    /// Any librdkafka setting passes through as `MART_KAFKA_<NAME>`.
    #[arg(
        help_heading = "Kafka",
        long,
        env = "MART_KAFKA_BROKERS",
        global = true
    )]
    pub kafka_brokers: Option<String>,

    /// Topics are `<prefix>.<service>.v1`.
    #[arg(
        help_heading = "Kafka",
        long,
        env = "MART_KAFKA_TOPIC_PREFIX",
        global = true,
        default_value = "mart"
    )]
    pub kafka_topic_prefix: String,

    /// Partitions of topics the bridge creates.
    #[arg(
        help_heading = "Kafka",
        long,
        env = "MART_KAFKA_PARTITIONS",
        global = true,
        default_value_t = 3
    )]
    pub kafka_partitions: i32,

    /// Replication factor of topics the bridge creates.
    #[arg(
        help_heading = "Kafka",
        long,
        env = "MART_KAFKA_REPLICATION",
        global = true,
        default_value_t = 1
    )]
    pub kafka_replication: i32,

    /// How long one REST request may take, end to end: every call made for it,
    /// on any node, gets what is left of this.
    #[arg(help_heading = "Node", long, env = "MART_CALL_TIMEOUT", global = true, default_value = "5s", value_parser = humantime::parse_duration)]
    pub call_timeout: Duration,

    /// First admin account, created at start if absent (with MART_ADMIN_PASSWORD).
    #[arg(
        help_heading = "Accounts and tokens",
        long,
        env = "MART_ADMIN_EMAIL",
        global = true
    )]
    pub admin_email: Option<String>,

    /// The first admin's password (prefer the variable to the flag, which
    /// other users of the machine can read in the process list)
    #[arg(help_heading = "Accounts and tokens", value_parser = secret,
        long,
        env = "MART_ADMIN_PASSWORD",
        global = true,
        hide_env_values = true
    )]
    pub admin_password: Option<SecretString>,

    /// Log format: `text` or `json`.
    #[arg(help_heading = "Telemetry", long, env = "MART_LOG_FORMAT", global = true, default_value = "text", value_parser = ["text", "json"])]
    pub log_format: String,

    /// Where Prometheus scrapes `/metrics` (host:port), instead of the edge;
    /// for nodes without an edge, or to keep metrics off a public port
    #[arg(help_heading = "Telemetry", long, env = "MART_METRICS_ADDR", global = true, value_parser = parse_socket_addr)]
    pub metrics_addr: Option<SocketAddr>,

    /// Browser origins whose pages may call the API (CORS), comma-separated
    /// (`https://shop.example.com`), or `*` for any. Unset: same origin only
    #[arg(help_heading = "Node", long, env = "MART_CORS_ORIGINS", global = true, value_delimiter = ',', value_parser = parse_cors_origin)]
    pub cors_origins: Vec<String>,
}

impl NodeOptions {
    /// The edge's CORS policy from `--cors-origins`.
    pub fn cors(&self) -> mart_http::Cors {
        if self.cors_origins.is_empty() {
            mart_http::Cors::Off
        } else if self.cors_origins.iter().any(|o| o == "*") {
            mart_http::Cors::Any
        } else {
            mart_http::Cors::Origins(
                self.cors_origins
                    .iter()
                    .filter_map(|o| axum::http::HeaderValue::from_str(o).ok())
                    .collect(),
            )
        }
    }
}

/// `mart stripe-test-server`
#[derive(Debug, Clone, Args)]
pub struct StripeTestServerOptions {
    /// Where to listen.
    #[arg(long, default_value = "127.0.0.1:12111")]
    pub listen: SocketAddr,
    /// The secret key clients must send.
    #[arg(long, default_value = "sk_test_mart")]
    pub api_key: String,
    /// Where to deliver webhooks (mart's `/stripe/webhook`).
    #[arg(long)]
    pub webhook_url: Option<String>,
    /// The secret webhooks are signed with.
    #[arg(long, default_value = "whsec_mart_test")]
    pub webhook_secret: String,
    /// Where browsers reach this server (checkout page links). Default: http://<listen>.
    #[arg(long)]
    pub public_url: Option<String>,
}

/// The services a node hosts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hosting(pub Vec<Service>);

fn parse_services(raw: &str) -> Result<Hosting, String> {
    match raw.trim() {
        "all" => Ok(Hosting(Service::ALL.to_vec())),
        "none" | "" => Ok(Hosting(Vec::new())),
        list => {
            let mut services = Vec::new();
            for name in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
                let service: Service = name.parse()?;
                if !services.contains(&service) {
                    services.push(service);
                }
            }
            Ok(Hosting(services))
        }
    }
}

/// Where the edge listens, if anywhere.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpAddr(pub Option<SocketAddr>);

fn parse_http_addr(raw: &str) -> Result<HttpAddr, String> {
    if raw == "none" {
        return Ok(HttpAddr(None));
    }
    parse_socket_addr(raw)
        .map(|addr| HttpAddr(Some(addr)))
        .map_err(|e| format!("{e}, or `none`"))
}

/// `host:port`: an address, or a host name resolved now (`localhost:8080`).
fn parse_socket_addr(raw: &str) -> Result<SocketAddr, String> {
    use std::net::ToSocketAddrs;
    if let Ok(addr) = raw.parse() {
        return Ok(addr);
    }
    let resolved = raw
        .to_socket_addrs()
        .map_err(|e| format!("{raw:?} is not host:port (e.g. 127.0.0.1:8080): {e}"))?;
    resolved
        .into_iter()
        .next()
        .ok_or_else(|| format!("{raw:?} resolves to no address"))
}

/// An absolute `http(s)://host[:port][/path]` URL, without a trailing `/`.
/// `*`, or an origin a browser sends: `scheme://host[:port]`, nothing after.
fn parse_cors_origin(raw: &str) -> Result<String, String> {
    if raw == "*" {
        return Ok(raw.to_owned());
    }
    let uri: axum::http::Uri = raw
        .parse()
        .map_err(|e| format!("{raw:?} is not an origin: {e}"))?;
    let bare = uri.path_and_query().is_none_or(|p| p.as_str() == "/") && !raw.ends_with('/');
    if !matches!(uri.scheme_str(), Some("http" | "https")) || uri.host().is_none() || !bare {
        return Err(format!(
            "{raw:?} is not an origin (scheme://host[:port], e.g. https://shop.example.com), nor *"
        ));
    }
    Ok(raw.to_owned())
}

/// An absolute http(s) URL, placeholders allowed.
fn parse_return_url(raw: &str) -> Result<String, String> {
    let probe = raw
        .replace("{ORDER_ID}", "order")
        .replace("{CHECKOUT_SESSION_ID}", "session");
    parse_public_url(&probe)?;
    Ok(raw.to_owned())
}

fn parse_public_url(raw: &str) -> Result<String, String> {
    let uri: axum::http::Uri = raw
        .parse()
        .map_err(|e| format!("{raw:?} is not a URL: {e}"))?;
    let scheme_ok = matches!(uri.scheme_str(), Some("http" | "https"));
    if !scheme_ok || uri.host().is_none_or(str::is_empty) {
        return Err(format!(
            "{raw:?} is not an absolute http(s) URL (e.g. https://shop.example.com)"
        ));
    }
    Ok(raw.trim_end_matches('/').to_owned())
}

/// Parses the command line and environment. A bad value that came from an
/// environment variable is reported with the variable's name: clap names
/// only the option.
pub fn parse() -> Cli {
    use clap::{CommandFactory, Parser};
    let error = match Cli::try_parse() {
        Ok(cli) => return cli,
        Err(error) => error,
    };
    let from_env = || {
        use clap::error::{ContextKind, ContextValue};
        let ContextValue::String(arg) = error.get(ContextKind::InvalidArg)? else {
            return None;
        };
        let long = arg.split_whitespace().next()?.trim_start_matches("--");
        let command = Cli::command();
        let option = command
            .get_arguments()
            .find(|a| a.get_long() == Some(long))?;
        let var = option.get_env()?.to_str()?.to_owned();
        let flag = format!("--{long}");
        let on_command_line =
            std::env::args().any(|a| a == flag || a.starts_with(&format!("{flag}=")));
        (std::env::var_os(&var).is_some() && !on_command_line).then_some(var)
    };
    if let Some(var) = from_env() {
        eprint!("{}", error.render());
        eprintln!("(the value comes from the environment variable {var})");
        std::process::exit(2);
    }
    error.exit()
}

impl NodeOptions {
    /// Checks that go across options; the message names the options.
    pub fn validate(&self) -> Result<(), String> {
        if self.cluster_addr.is_none() && !self.peers.is_empty() {
            return Err("--peers needs --cluster-addr (MART_CLUSTER_ADDR): a node must listen to join a cluster".into());
        }
        let cookie = self.cookie.as_ref().map(ExposeSecret::expose_secret);
        if self.cluster_addr.is_some() && cookie.is_none_or(str::is_empty) {
            return Err(
                "--cluster-addr needs --cookie (MART_COOKIE), the secret shared by every node"
                    .into(),
            );
        }
        // Peers holding the cookie speak for callers: it must not be guessable.
        if cookie.is_some_and(|c| c.chars().count() < 16) {
            return Err(
                "--cookie (MART_COOKIE) must be at least 16 characters (e.g. openssl rand -hex 16)"
                    .into(),
            );
        }
        let tls = [
            &self.cluster_tls_cert,
            &self.cluster_tls_key,
            &self.cluster_tls_ca,
        ];
        if tls.iter().any(|o| o.is_some()) && !tls.iter().all(|o| o.is_some()) {
            return Err(
                "set all of --cluster-tls-cert, --cluster-tls-key and --cluster-tls-ca, or none"
                    .into(),
            );
        }
        if tls.iter().any(|o| o.is_some()) && self.cluster_addr.is_none() {
            return Err("--cluster-tls-* needs --cluster-addr".into());
        }
        if self.admin_email.is_some() != self.admin_password.is_some() {
            return Err("set both MART_ADMIN_EMAIL and MART_ADMIN_PASSWORD, or neither".into());
        }
        if self.services.0.is_empty() && self.http_addr.0.is_none() {
            return Err("--services none with --http-addr none leaves nothing to run".into());
        }
        Ok(())
    }

    /// The database URL a service uses, if configured.
    pub fn database_url(&self, service: Service) -> Option<String> {
        std::env::var(service.database_url_var())
            .ok()
            .filter(|url| !url.is_empty())
            .or_else(|| {
                self.database_url
                    .as_ref()
                    .map(|url| url.expose_secret().to_owned())
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn services_parse_as_lists_all_or_none() {
        assert_eq!(parse_services("all"), Ok(Hosting(Service::ALL.to_vec())));
        assert_eq!(parse_services("none"), Ok(Hosting(vec![])));
        assert_eq!(
            parse_services("users, users"),
            Ok(Hosting(vec![Service::Users]))
        );
        assert!(parse_services("users,bogus").is_err_and(|e| e.contains("bogus")));
    }

    #[test]
    fn no_secret_shows_in_the_options_debug_output() {
        let secrets = [
            ("--jwt-secret", "jwt-secret-value-of-32-bytes-or-more"),
            ("--cookie", "cookie-value-long-enough"),
            (
                "--database-url",
                "postgres://mart:db-password-value@db/mart",
            ),
            ("--stripe-secret-key", "sk_test_secret_value"),
            ("--stripe-webhook-secret", "whsec_secret_value"),
            ("--smtp-url", "smtp://mail:smtp-password-value@mail"),
            ("--admin-password", "admin-password-value"),
        ];
        let mut args = vec!["mart"];
        for (option, value) in secrets {
            args.extend([option, value]);
        }
        let cli = Cli::try_parse_from(args).expect("parses");
        let shown = format!("{cli:?}");
        for (option, value) in secrets {
            assert!(!shown.contains(value), "{option} shows in {shown}");
        }
        let url = cli.node.database_url(Service::Users).expect("url");
        assert!(url.contains("db-password-value"), "still usable");
    }

    #[test]
    fn a_bad_value_is_a_one_line_error_naming_the_option() {
        let err = Cli::try_parse_from(["mart", "--http-addr", "nowhere"]).expect_err("bad addr");
        let text = err.to_string();
        assert!(text.contains("--http-addr"), "{text}");
        let err = Cli::try_parse_from(["mart", "--token-ttl", "soon"]).expect_err("bad ttl");
        assert!(err.to_string().contains("--token-ttl"));
    }

    #[test]
    fn every_option_has_a_description_and_the_node_options_a_heading() {
        use clap::CommandFactory;
        let command = Cli::command();
        let mut commands = vec![&command];
        commands.extend(command.get_subcommands());
        for command in commands {
            for arg in command.get_arguments() {
                let name = arg.get_id().as_str();
                if matches!(name, "help" | "version") {
                    continue;
                }
                assert!(
                    arg.get_help().is_some(),
                    "{} --{name} has no description",
                    command.get_name()
                );
                if arg.is_global_set() {
                    assert!(arg.get_help_heading().is_some(), "--{name} has no heading");
                }
            }
        }
    }

    #[test]
    fn cors_origins_are_origins_or_any() {
        let cors = |args: &[&str]| {
            let mut all = vec!["mart"];
            all.extend(args);
            Cli::try_parse_from(all).map(|cli| cli.node.cors())
        };
        assert_eq!(cors(&[]).expect("none"), mart_http::Cors::Off);
        assert_eq!(
            cors(&["--cors-origins", "*"]).expect("any"),
            mart_http::Cors::Any
        );
        assert_eq!(
            cors(&[
                "--cors-origins",
                "https://shop.example.com,http://localhost:5173"
            ])
            .expect("two"),
            mart_http::Cors::Origins(vec![
                axum::http::HeaderValue::from_static("https://shop.example.com"),
                axum::http::HeaderValue::from_static("http://localhost:5173"),
            ])
        );
        for bad in [
            "shop.example.com",
            "https://shop.example.com/",
            "https://a.b/path",
            "ftp://a.b",
        ] {
            let err = cors(&["--cors-origins", bad]).expect_err(bad);
            assert!(err.to_string().contains("--cors-origins"), "{bad}: {err}");
        }
    }

    #[test]
    fn peers_without_a_cluster_address_are_refused() {
        let cli = Cli::try_parse_from(["mart", "--peers", "127.0.0.1:1"]).expect("parses");
        assert!(
            cli.node
                .validate()
                .is_err_and(|e| e.contains("--cluster-addr"))
        );
    }

    #[test]
    fn short_cookies_and_jwt_secrets_are_refused() {
        let with = |args: &[&str]| {
            let mut all = vec!["mart", "--cluster-addr", "127.0.0.1:4370"];
            all.extend(args);
            Cli::try_parse_from(all).expect("parses").node
        };
        let short = with(&["--cookie", "s3cret"]);
        assert!(short.validate().is_err_and(|e| e.contains("16 characters")));
        assert!(
            with(&["--cookie", "a-cookie-of-16-chars"])
                .validate()
                .is_ok()
        );

        let weak = with(&[
            "--cookie",
            "a-cookie-of-16-chars",
            "--jwt-secret",
            "sixteen chars ok",
        ]);
        let refused = crate::token_keys(&weak).expect_err("a 16-byte secret");
        assert!(refused.to_string().contains("32 bytes"), "{refused}");
        let strong = with(&["--jwt-secret", "a secret that is thirty-two bytes long"]);
        assert!(crate::token_keys(&strong).is_ok());
    }
}
