//! Merging flags, environment, the config file and defaults.

use super::*;
use crate::config::{DEFAULT_INSTANCE_IDLE, DEFAULT_MAX_INSTANCES};

fn args(config: Option<PathBuf>, token: Option<&str>) -> ServeArgs {
    ServeArgs {
        listen: None,
        data_dir: None,
        admin_token: token.map(str::to_owned),
        config,
        deploy_dir: None,
        drain_timeout: None,
        max_connections: None,
        header_read_timeout: None,
        idle_timeout: None,
        mailbox_bytes: None,
        queue_budget_bytes: None,
        max_instances: None,
        instance_idle: None,
        max_compilations: None,
        compile_timeout: None,
        signals: SignalLimitArgs::default(),
        limits: HostLimitArgs::default(),
        gateway: GatewayArgs::default(),
        cluster: ClusterArgs::default(),
    }
}

/// Proves the config file's `[cluster]` table joins a cluster (whose host refuses what it
/// does not keep cluster-wide yet), and that the client gateway is refused beside it.
#[test]
fn a_cluster_from_the_file_and_no_gateway_beside_it() {
    let settings = ServeArgs::from_file_text(
        "admin_token = \"t\"\n[cluster]\nnats = [\"nats://127.0.0.1:4222\"]\ncluster_name = \"blue\"\n",
    )
    .unwrap();
    let cluster = settings.cluster.expect("a cluster");
    assert_eq!(cluster.servers, ["nats://127.0.0.1:4222"]);
    assert_eq!(cluster.cluster, "blue");
    assert!(settings.host_config.clustered);
    let alone = ServeArgs::from_file_text("admin_token = \"t\"\n").unwrap();
    assert!(alone.cluster.is_none() && !alone.host_config.clustered);

    let mut both = args(None, Some("t"));
    both.cluster.nats = vec!["nats://127.0.0.1:4222".into()];
    both.gateway.gateway_listen = Some("127.0.0.1:7071".parse().unwrap());
    both.gateway.gateway_tokens = Some("tokens.toml".into());
    let refused = both.settings().unwrap_err().to_string();
    assert!(
        refused.contains("--gateway-listen") && refused.contains("--nats"),
        "{refused}"
    );
}

#[test]
fn flags_win_over_the_config_file_which_wins_over_defaults() {
    let path = std::env::temp_dir().join(format!("switchboard-config-{}.toml", std::process::id()));
    std::fs::write(
        &path,
        "listen = \"127.0.0.1:9000\"\nadmin_token = \"from-file\"\ndrain_timeout = \"2m\"\n",
    )
    .unwrap();
    let settings = args(Some(path.clone()), None).settings().unwrap();
    assert_eq!(settings.admin_token, "from-file");
    assert_eq!(settings.listen.port(), 9000);
    assert_eq!(settings.data_dir, PathBuf::from(DEFAULT_DATA_DIR));
    assert_eq!(settings.drain_timeout, Duration::from_secs(120));
    let mut flags = args(Some(path.clone()), Some("from-flag"));
    flags.drain_timeout = Some(Duration::from_millis(500));
    let settings = flags.settings().unwrap();
    assert_eq!(settings.admin_token, "from-flag");
    assert_eq!(settings.drain_timeout, Duration::from_millis(500));

    std::fs::write(
        &path,
        "admin_token = \"t\"\nmax_instances = 12\ninstance_idle = \"200ms\"\n",
    )
    .unwrap();
    let settings = args(Some(path.clone()), None).settings().unwrap();
    assert_eq!(settings.host_config.max_instances, 12);
    assert_eq!(
        settings.host_config.instance_idle,
        Duration::from_millis(200)
    );
    let mut flags = args(Some(path.clone()), None);
    flags.max_instances = Some(7);
    flags.instance_idle = Some(Duration::from_secs(3));
    let settings = flags.settings().unwrap();
    assert_eq!(settings.host_config.max_instances, 7);
    assert_eq!(settings.host_config.instance_idle, Duration::from_secs(3));

    std::fs::write(&path, "admin_token = \"t\"\nmax_instances = 0\n").unwrap();
    let error = args(Some(path.clone()), None).settings().unwrap_err();
    assert!(format!("{error:#}").contains("max_instances"), "{error:#}");

    std::fs::write(&path, "admin_token = \"t\"\ndrain_timeout = \"soon\"\n").unwrap();
    let error = args(Some(path.clone()), None).settings().unwrap_err();
    assert!(format!("{error:#}").contains("drain_timeout"), "{error:#}");

    std::fs::write(&path, "colour = \"red\"\n").unwrap();
    let error = args(Some(path), Some("t")).settings().unwrap_err();
    assert!(format!("{error:#}").contains("colour"), "{error:#}");
}

/// Proves the connection and queue settings come from flags over the config file over
/// the defaults, and a bad value in the file names its key.
#[test]
fn connection_and_queue_settings_merge() {
    let path = std::env::temp_dir().join(format!(
        "switchboard-config-limits-{}.toml",
        std::process::id()
    ));
    let settings = args(None, Some("t")).settings().unwrap();
    assert_eq!(settings.connections, ConnectionLimits::default());
    assert_eq!(
        settings.host_config.mailbox_bytes,
        crate::config::DEFAULT_MAILBOX_BYTES
    );
    std::fs::write(
        &path,
        "admin_token = \"t\"\nmax_connections = 50\nheader_read_timeout = \"1s\"\nidle_timeout = \"2m\"\nmailbox_bytes = \"8MiB\"\nqueue_budget_bytes = 1048576\n",
    )
    .unwrap();
    let settings = args(Some(path.clone()), None).settings().unwrap();
    assert_eq!(
        settings.connections,
        ConnectionLimits {
            max_connections: 50,
            header_read_timeout: Duration::from_secs(1),
            idle_timeout: Duration::from_secs(120),
            ..ConnectionLimits::default()
        }
    );
    assert_eq!(settings.host_config.mailbox_bytes, 8 << 20);
    assert_eq!(settings.host_config.queue_budget_bytes, 1 << 20);
    let mut flags = args(Some(path.clone()), None);
    flags.max_connections = Some(7);
    flags.mailbox_bytes = Some(1024);
    let settings = flags.settings().unwrap();
    assert_eq!(settings.connections.max_connections, 7);
    assert_eq!(settings.host_config.mailbox_bytes, 1024);

    std::fs::write(&path, "admin_token = \"t\"\nmailbox_bytes = \"lots\"\n").unwrap();
    let error = args(Some(path.clone()), None).settings().unwrap_err();
    assert!(format!("{error:#}").contains("mailbox_bytes"), "{error:#}");
    std::fs::write(&path, "admin_token = \"t\"\nidle_timeout = \"long\"\n").unwrap();
    let error = args(Some(path), None).settings().unwrap_err();
    assert!(format!("{error:#}").contains("idle_timeout"), "{error:#}");
}

/// Proves the config file's `[signals]` and `[limits]` tables reach the host's settings.
#[test]
fn the_limit_tables_of_the_config_file_apply() {
    let path = std::env::temp_dir().join(format!(
        "switchboard-config-tables-{}.toml",
        std::process::id()
    ));
    std::fs::write(
        &path,
        "admin_token = \"t\"\n[signals]\nmax_causal_depth = 9\n[limits]\nmax_message_bytes = 4096\n",
    )
    .unwrap();
    let settings = args(Some(path.clone()), None).settings().unwrap();
    assert_eq!(settings.host_config.max_causal_depth, 9);
    assert_eq!(settings.host_config.max_message_bytes, 4096);
    std::fs::write(&path, "admin_token = \"t\"\n[limits]\ncolour = 1\n").unwrap();
    let error = args(Some(path), None).settings().unwrap_err();
    assert!(format!("{error:#}").contains("colour"), "{error:#}");
}

#[test]
fn a_token_is_required() {
    let error = args(None, None).settings().unwrap_err();
    assert!(error.to_string().contains("admin token is required"));
    let settings = args(None, Some("t")).settings().unwrap();
    assert_eq!(settings.listen.to_string(), DEFAULT_LISTEN);
    assert_eq!(settings.drain_timeout, DRAIN_TIMEOUT);
    assert_eq!(settings.host_config.max_instances, DEFAULT_MAX_INSTANCES);
    assert_eq!(settings.host_config.instance_idle, DEFAULT_INSTANCE_IDLE);
}

/// Proves `--max-instances` takes 1 to the limit and says so otherwise.
#[test]
fn max_instances_are_checked() {
    assert_eq!(max_instances_arg("12"), Ok(12));
    for bad in ["0", "-1", "many", "10001"] {
        let error = max_instances_arg(bad).unwrap_err();
        assert!(error.contains("from 1 to 10000"), "{error}");
    }
}

/// Proves a JWT leeway past a day is refused when the flags are read (a huge one wrapped
/// the time it is subtracted from: every token refused, or a panic in a debug build).
#[test]
fn a_jwt_leeway_past_a_day_is_refused() {
    use clap::Parser;
    #[derive(Parser)]
    struct Flags {
        #[command(flatten)]
        gateway: GatewayArgs,
    }
    let parse = |leeway: &str| Flags::try_parse_from(["serve", "--gateway-jwt-leeway", leeway]);
    assert_eq!(
        parse("86400").unwrap().gateway.gateway_jwt_leeway,
        Some(86_400)
    );
    let refused = parse("18446744073709551615").err().expect("refused");
    assert!(
        refused.to_string().contains("gateway-jwt-leeway"),
        "{refused}"
    );
}
