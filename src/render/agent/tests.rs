//! Snapshot tests: each template rendered from a fixed context, compared with the whole
//! expected file; plus the escaping contract.

use super::*;

fn config() -> AgentConfig {
    let cp = |i: u8| Ipv4Addr::new(10, 0, 0, 10 + i);
    AgentConfig {
        node: "cp-1".into(),
        listen: "10.0.0.100:8443".parse().unwrap(),
        backends: (1..=3)
            .map(|i| AgentBackend {
                name: format!("cp-{i}"),
                address: SocketAddr::new(cp(i).into(), 6443),
            })
            .collect(),
        ca_file: "/etc/kubernetes/pki/ca.crt".into(),
        status_listen: "127.0.0.1:9901".parse().unwrap(),
        stats: Some(AgentStats {
            listen: "10.0.0.11:9000".parse().unwrap(),
            uri: "/stats".into(),
            realm: "HAProxy Statistics".into(),
            user: "admin".into(),
            password_file: "/etc/khagent/stats.password".into(),
        }),
        track: Some(AgentTrack {
            backend: Some("cp-1".into()),
            weight: -30,
        }),
        vrrp: Some(AgentVrrp {
            interface: "eth0".into(),
            router_id: 51,
            priority: 150,
            vip: Ipv4Addr::new(10, 0, 0, 100),
            vip_prefix_len: 24,
            source_address: cp(1),
            preempt_delay_ms: 5000,
            peers: vec![cp(2), cp(3)],
        }),
    }
}

fn service() -> AgentService {
    AgentService {
        binary: "/usr/local/bin/khagent".into(),
        config: "/etc/khagent/khagent.yaml".into(),
    }
}

#[test]
fn agent_config_renders_every_section() {
    let want = r#"# Managed by khactl: khagent (API load balancer + VRRP virtual IP) on "cp-1".
# Edits here are overwritten by the next `khactl up`; change the inventory instead.
# Reference: docs/agent.md and docs/vrrp.md.
listen: "10.0.0.100:8443"
backends:
  - name: "cp-1"
    address: "10.0.0.11:6443"
  - name: "cp-2"
    address: "10.0.0.12:6443"
  - name: "cp-3"
    address: "10.0.0.13:6443"
health:
  kind: https
  path: "/readyz"
  ca_file: "/etc/kubernetes/pki/ca.crt"
status:
  listen: "127.0.0.1:9901"
stats:
  listen: "10.0.0.11:9000"
  uri: "/stats"
  realm: "HAProxy Statistics"
  user: "admin"
  password_file: "/etc/khagent/stats.password"
track:
  - name: "local-apiserver"
    backend: "cp-1"
    weight: -30
vrrp:
  interface: "eth0"
  router_id: 51
  priority: 150
  vip: "10.0.0.100"
  vip_prefix_len: 24
  source_address: "10.0.0.11"
  preempt_delay_ms: 5000
  # Always unicast, also with no peers (one control plane): a multicast group would obey
  # adverts from anyone on the segment.
  unicast: true
  peers: ["10.0.0.12","10.0.0.13"]
"#;
    assert_eq!(config().render().unwrap(), want);
}

/// Issue #12, item 10: one control plane is a unicast group with no peers, which obeys no
/// advert, not a multicast one, which would obey anyone's on the segment.
#[test]
fn agent_config_of_a_single_node_is_unicast_with_no_peers() {
    let mut c = config();
    c.backends.truncate(1);
    c.vrrp.as_mut().unwrap().peers.clear();
    let text = c.render().unwrap();
    assert!(text.contains("\n  unicast: true\n  peers: []\n"), "{text}");
    let vrrp = khagent::config::Config::parse(&text).unwrap().vrrp.unwrap();
    assert!(vrrp.unicast() && vrrp.peers.is_empty());
}

/// The values khactl puts in the config come from a validated inventory, but the template
/// must not rely on that: a value with YAML syntax in it stays one string.
#[test]
fn hostile_strings_cannot_add_yaml_keys() {
    let mut c = config();
    c.node = "x\"\nlisten: 0.0.0.0:1".into();
    c.backends[0].name = "cp-1\n    evil: true".into();
    c.vrrp.as_mut().unwrap().interface = "eth0\"\n  priority: 254 #".into();
    let text = c.render().unwrap();
    let doc: serde_yaml_ng::Value = serde_yaml_ng::from_str(&text).unwrap();
    assert_eq!(doc["listen"].as_str(), Some("10.0.0.100:8443"), "{text}");
    assert_eq!(
        doc["backends"][0]["name"].as_str(),
        Some("cp-1\n    evil: true")
    );
    assert!(doc["backends"][0].get("evil").is_none(), "{text}");
    assert_eq!(
        doc["vrrp"]["interface"].as_str(),
        Some("eth0\"\n  priority: 254 #")
    );
    assert_eq!(doc["vrrp"]["priority"].as_u64(), Some(150), "{text}");
}

#[test]
fn every_value_in_the_templates_goes_through_an_escaping_filter() {
    for (name, text, filter) in [
        (CONFIG.name, CONFIG.text, "json"),
        (SYSTEMD.name, SYSTEMD.text, "systemd"),
        (OPENRC.name, OPENRC.text, "shell"),
    ] {
        for expr in text.split("{{").skip(1) {
            let expr = expr.split("}}").next().unwrap_or_default().trim();
            assert!(
                expr.ends_with(&format!("| {filter}")),
                "{name}: `{{{{ {expr} }}}}` is printed without the {filter} filter"
            );
        }
    }
}

#[test]
fn systemd_unit_checks_the_config_then_runs_the_agent() {
    let want = r#"# Managed by khactl; edits here are overwritten by the next `khactl up`.
# khagent reference: docs/agent.md in the khactl repository.
[Unit]
Description=khagent: Kubernetes API load balancer and virtual IP
After=network-online.target
Wants=network-online.target
# Never give up restarting it: systemd's default stops after 5 failed starts in 10 s,
# which would leave this node out of the VIP group after a passing fault at boot.
StartLimitIntervalSec=0

[Service]
Type=simple
ExecStartPre=/usr/local/bin/khagent check --config /etc/khagent/khagent.yaml
ExecStart=/usr/local/bin/khagent --config /etc/khagent/khagent.yaml
ExecReload=/bin/kill -HUP $MAINPID
# SIGTERM drains connections (drain_timeout, 30 s by default) and hands the VIP over with a
# priority-0 advert; allow for the drain before systemd resorts to SIGKILL.
TimeoutStopSec=45
Restart=always
RestartSec=1
LimitNOFILE=65536
# The agent needs the network and nothing else: raw sockets for VRRP (NET_RAW), the VIP and
# its lifetime (NET_ADMIN), a listener below port 1024 if the inventory asks for one
# (NET_BIND_SERVICE) and SCHED_RR for the VRRP thread (SYS_NICE). It writes one file, the
# record of the VIP it added (/var/lib/khagent/vip-added, so that at its next start it
# removes only its own VIP): StateDirectory keeps that directory writable under
# ProtectSystem=strict, and nothing else is.
CapabilityBoundingSet=CAP_NET_ADMIN CAP_NET_RAW CAP_NET_BIND_SERVICE CAP_SYS_NICE
NoNewPrivileges=yes
ProtectSystem=strict
StateDirectory=khagent
ProtectHome=yes
PrivateTmp=yes

[Install]
WantedBy=multi-user.target
"#;
    assert_eq!(service().render_systemd().unwrap(), want);
}

#[test]
fn openrc_script_is_supervised_and_checks_before_start() {
    let want = r#"#!/sbin/openrc-run
# Managed by khactl; edits here are overwritten by the next `khactl up`.

description="khagent: Kubernetes API load balancer and virtual IP"
command='/usr/local/bin/khagent'
command_args="--config "'/etc/khagent/khagent.yaml'
khagent_config='/etc/khagent/khagent.yaml'
supervisor=supervise-daemon
respawn_delay=1
respawn_max=0
output_log=/var/log/khagent.log
error_log=/var/log/khagent.log
# SIGTERM drains connections (drain_timeout, 30 s by default) and hands the VIP over.
retry="TERM/45/KILL/5"
rc_ulimit="-n 65536"
extra_started_commands="reload"

depend() {
	need net
	after firewall
}

start_pre() {
	"$command" check --config "$khagent_config"
}

reload() {
	ebegin "Reloading khagent"
	supervise-daemon "$RC_SVCNAME" --signal HUP
	eend $?
}
"#;
    assert_eq!(service().render_openrc().unwrap(), want);
}

/// The OpenRC script is shell: prove with a real `sh` that the quoted values expand to exactly
/// what was rendered, quotes and `$` included.
#[test]
fn openrc_values_survive_a_real_shell() {
    let s = AgentService {
        binary: "/opt/it's $(here)/khagent".into(),
        config: "/etc/k h/agent.yaml".into(),
    };
    let text = s.render_openrc().unwrap();
    let syntax = std::process::Command::new("sh")
        .args(["-n", "-c", &text])
        .output()
        .unwrap();
    assert!(syntax.status.success(), "sh -n: {syntax:?}\n{text}");
    let assignments: String = text
        .lines()
        .filter(|l| l.starts_with("command=") || l.starts_with("khagent_config="))
        .map(|l| format!("{l}\n"))
        .collect();
    let script = format!("{assignments}printf '%s\\n' \"$command\" \"$khagent_config\"");
    let out = std::process::Command::new("sh")
        .args(["-c", &script])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "/opt/it's $(here)/khagent\n/etc/k h/agent.yaml\n"
    );
}
