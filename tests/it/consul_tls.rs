//! TLS configuration of the client (`CONSUL_HTTP_ADDR=https://…`, `CONSUL_HTTP_SSL`,
//! `CONSUL_HTTP_SSL_VERIFY`, `CONSUL_CACERT`, `CONSUL_CAPATH`, `CONSUL_TLS_SERVER_NAME`,
//! `CONSUL_CLIENT_CERT`, `CONSUL_CLIENT_KEY`) against a real TLS server process on loopback:
//! `openssl s_server` with a throw-away CA generated for the test, requiring a client
//! certificate. The server answers every request with an HTML status page, so a completed
//! handshake shows up as a decode error (not JSON) and a refused one as a transport error.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use wafleet::consul::{Client, Config, ConsulError};

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl runs");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// CA, server certificate for IP 127.0.0.1, client certificate.
fn make_pki(dir: &Path) {
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    let mut ca = vec!["req", "-x509"];
    ca.extend(ec);
    ca.extend([
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "2",
        "-subj",
        "/CN=wafleet-test-ca",
    ]);
    ca.extend([
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
    ]);
    openssl(dir, &ca);
    std::fs::write(
        dir.join("srv.ext"),
        "subjectAltName=IP:127.0.0.1,DNS:server.dc1.consul\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    std::fs::write(dir.join("cli.ext"), "extendedKeyUsage=clientAuth\n").unwrap();
    for (name, ext) in [("srv", "srv.ext"), ("cli", "cli.ext")] {
        let key = format!("{name}.key");
        let csr = format!("{name}.csr");
        let pem = format!("{name}.pem");
        let mut req = vec!["req"];
        req.extend(ec);
        req.extend(["-keyout", &key, "-out", &csr, "-subj", "/CN=wafleet-test"]);
        openssl(dir, &req);
        openssl(
            dir,
            &[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                &pem,
                "-days",
                "2",
                "-extfile",
                ext,
            ],
        );
    }
}

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `openssl s_server` requiring client certificates; returns once it accepts.
fn start_server(dir: &Path) -> (Server, u16) {
    for _ in 0..5 {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut child = Command::new("openssl")
            .args([
                "s_server",
                "-accept",
                &format!("127.0.0.1:{port}"),
                "-cert",
                "srv.pem",
                "-key",
                "srv.key",
                "-CAfile",
                "ca.pem",
                "-Verify",
                "1",
                "-www",
            ])
            .current_dir(dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("openssl s_server starts");
        let stdout = child.stdout.take().unwrap();
        let ready = BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            .any(|l| l.contains("ACCEPT"));
        if ready {
            return (Server(child), port);
        }
        let _ = child.kill();
        let _ = child.wait();
    }
    panic!("openssl s_server did not start");
}

fn client(port: u16, dir: &Path, ca: bool, identity: bool) -> Client {
    let file = |n: &str| dir.join(n).to_string_lossy().into_owned();
    let cfg = Config::from_lookup(|k| match k {
        "CONSUL_HTTP_ADDR" => Some(format!("https://127.0.0.1:{port}")),
        "CONSUL_CACERT" if ca => Some(file("ca.pem")),
        "CONSUL_CLIENT_CERT" if identity => Some(file("cli.pem")),
        "CONSUL_CLIENT_KEY" if identity => Some(file("cli.key")),
        "CONSUL_HTTP_TOKEN" => Some("tls-token".into()),
        _ => None,
    })
    .unwrap();
    Client::new(&cfg).unwrap()
}

#[tokio::test]
async fn https_with_custom_ca_and_client_certificate() {
    let dir = tempfile::tempdir().unwrap();
    make_pki(dir.path());
    let (_server, port) = start_server(dir.path());
    let call = |c: Client| async move {
        tokio::time::timeout(Duration::from_secs(20), c.agent_services())
            .await
            .expect("no hang")
    };

    // Trusted CA and a client certificate: the handshake completes; the body is HTML.
    let ok = call(client(port, dir.path(), true, true)).await;
    assert!(
        matches!(ok, Err(ConsulError::Decode { .. })),
        "expected a completed TLS exchange, got {ok:?}"
    );

    // The server's CA is not trusted without CONSUL_CACERT.
    let untrusted = call(client(port, dir.path(), false, true)).await;
    assert!(
        matches!(untrusted, Err(ConsulError::Transport(_))),
        "{untrusted:?}"
    );

    // The server requires a client certificate.
    let anonymous = call(client(port, dir.path(), true, false)).await;
    assert!(
        matches!(anonymous, Err(ConsulError::Transport(_))),
        "{anonymous:?}"
    );
}

#[test]
fn unusable_tls_material_is_a_configuration_error() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("garbage.pem"), "not a certificate").unwrap();
    let g = dir
        .path()
        .join("garbage.pem")
        .to_string_lossy()
        .into_owned();
    let cfg = Config::from_lookup(|k| match k {
        "CONSUL_CACERT" => Some(g.clone()),
        _ => None,
    })
    .unwrap();
    assert!(matches!(Client::new(&cfg), Err(ConsulError::Config(_))));
    let cfg = Config::from_lookup(|k| match k {
        "CONSUL_CLIENT_CERT" | "CONSUL_CLIENT_KEY" => Some(g.clone()),
        _ => None,
    })
    .unwrap();
    assert!(matches!(Client::new(&cfg), Err(ConsulError::Config(_))));
}

/// A client from `vars` (plus the client certificate the server requires).
fn client_with(dir: &Path, vars: &[(&str, String)]) -> Result<Client, ConsulError> {
    let file = |n: &str| dir.join(n).to_string_lossy().into_owned();
    let cfg = Config::from_lookup(|k| {
        if let Some((_, v)) = vars.iter().find(|(name, _)| *name == k) {
            return Some(v.clone());
        }
        match k {
            "CONSUL_CLIENT_CERT" => Some(file("cli.pem")),
            "CONSUL_CLIENT_KEY" => Some(file("cli.key")),
            _ => None,
        }
    })?;
    Client::new(&cfg)
}

#[tokio::test]
async fn consul_ssl_variables_are_honoured() {
    let dir = tempfile::tempdir().unwrap();
    make_pki(dir.path());
    let (_server, port) = start_server(dir.path());
    let ca = dir.path().join("ca.pem").to_string_lossy().into_owned();
    let capath = dir.path().join("cas");
    std::fs::create_dir(&capath).unwrap();
    std::fs::copy(dir.path().join("ca.pem"), capath.join("consul-ca.pem")).unwrap();
    // A non-certificate file in the directory is skipped, as Consul's CLI does.
    std::fs::write(capath.join("README"), "not a certificate").unwrap();
    let bare = format!("127.0.0.1:{port}");
    let https = format!("https://127.0.0.1:{port}");
    let call = |c: Client| async move {
        tokio::time::timeout(Duration::from_secs(20), c.agent_services())
            .await
            .expect("no hang")
    };
    let completed = |r: &Result<_, ConsulError>| matches!(r, Err(ConsulError::Decode { .. }));
    let refused = |r: &Result<_, ConsulError>| matches!(r, Err(ConsulError::Transport(_)));

    // CONSUL_HTTP_SSL=true turns a bare host:port into https.
    let c = client_with(
        dir.path(),
        &[
            ("CONSUL_HTTP_ADDR", bare.clone()),
            ("CONSUL_HTTP_SSL", "true".into()),
            ("CONSUL_CACERT", ca.clone()),
        ],
    )
    .unwrap();
    assert_eq!(c.base_url().scheme(), "https");
    let r = call(c).await;
    assert!(completed(&r), "CONSUL_HTTP_SSL=true: {r:?}");
    // Without it the same address is plain http, which the TLS server does not answer.
    let r = call(client_with(dir.path(), &[("CONSUL_HTTP_ADDR", bare.clone())]).unwrap()).await;
    assert!(!completed(&r), "plain http must not complete: {r:?}");

    // CONSUL_CAPATH: a directory of CA files.
    let r = call(
        client_with(
            dir.path(),
            &[
                ("CONSUL_HTTP_ADDR", https.clone()),
                ("CONSUL_CAPATH", capath.to_string_lossy().into_owned()),
            ],
        )
        .unwrap(),
    )
    .await;
    assert!(completed(&r), "CONSUL_CAPATH: {r:?}");

    // CONSUL_HTTP_SSL_VERIFY=false: an untrusted server is accepted; verification is the default.
    let r = call(client_with(dir.path(), &[("CONSUL_HTTP_ADDR", https.clone())]).unwrap()).await;
    assert!(refused(&r), "untrusted CA must be refused: {r:?}");
    let r = call(
        client_with(
            dir.path(),
            &[
                ("CONSUL_HTTP_ADDR", https.clone()),
                ("CONSUL_HTTP_SSL_VERIFY", "false".into()),
            ],
        )
        .unwrap(),
    )
    .await;
    assert!(completed(&r), "CONSUL_HTTP_SSL_VERIFY=false: {r:?}");

    // CONSUL_TLS_SERVER_NAME: the certificate is checked against that name, not the address.
    let named = |name: &str| {
        client_with(
            dir.path(),
            &[
                ("CONSUL_HTTP_ADDR", https.clone()),
                ("CONSUL_CACERT", ca.clone()),
                ("CONSUL_TLS_SERVER_NAME", name.into()),
            ],
        )
        .unwrap()
    };
    let r = call(named("server.dc1.consul")).await;
    assert!(completed(&r), "matching server name: {r:?}");
    let r = call(named("server.dc2.consul")).await;
    assert!(
        refused(&r),
        "a name the certificate lacks must be refused: {r:?}"
    );

    // A boolean that is not one of Go's spellings is a configuration error.
    assert!(matches!(
        client_with(dir.path(), &[("CONSUL_HTTP_SSL", "yes".into())]),
        Err(ConsulError::Config(_))
    ));
    assert!(matches!(
        client_with(
            dir.path(),
            &[(
                "CONSUL_CAPATH",
                dir.path().join("nope").to_string_lossy().into_owned()
            )]
        ),
        Err(ConsulError::Config(_))
    ));
}

#[tokio::test]
async fn consul_http_auth_sends_basic_credentials() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    // A plain HTTP listener that records the request head and answers `{}`.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = tokio::spawn(async move {
        let (mut sock, _) = listener.accept().await.unwrap();
        let mut head = Vec::new();
        let mut buf = [0u8; 1024];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = sock.read(&mut buf).await.unwrap();
            assert!(n > 0, "connection closed before the request head");
            head.extend_from_slice(&buf[..n]);
        }
        sock.write_all(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}")
            .await
            .unwrap();
        String::from_utf8_lossy(&head).into_owned()
    });
    let cfg = Config::from_lookup(|k| match k {
        "CONSUL_HTTP_ADDR" => Some(format!("127.0.0.1:{port}")),
        "CONSUL_HTTP_AUTH" => Some("ops:s3cret:with-colon".into()),
        _ => None,
    })
    .unwrap();
    // The password never shows in the configuration's Debug output.
    let shown = format!("{cfg:?}");
    assert!(!shown.contains("s3cret"), "{shown}");
    let c = Client::new(&cfg).unwrap();
    let services = tokio::time::timeout(Duration::from_secs(20), c.agent_services())
        .await
        .expect("no hang")
        .unwrap();
    assert!(services.is_empty());
    let head = server.await.unwrap().to_ascii_lowercase();
    // base64("ops:s3cret:with-colon"): everything after the first colon is the password.
    assert!(
        head.contains("authorization: basic b3bzonmzy3jlddp3axrolwnvbg9u"),
        "{head}"
    );
}
