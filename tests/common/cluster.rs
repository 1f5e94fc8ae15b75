//! A real Kubernetes control plane on loopback for the Kubernetes backend's tests: etcd,
//! kube-apiserver (RBAC on, token auth) and kube-controller-manager (the Job controller and
//! the garbage collector), v1.20.2, built once by `.ci/control-plane-build.sh`. No scheduler
//! and no kubelet: the tests play those, and the cluster autoscaler.

use super::ports::unused_port;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The token of the cluster's administrator (`system:masters`).
const ADMIN_TOKEN: &str = "gembatch-test-admin-token";
const CONTROLLER_TOKEN: &str = "gembatch-test-controller-token";

/// A running control plane; stopped (every process it started) when dropped.
pub struct Cluster {
    /// Its files: certificates, tokens, etcd's data, the kubeconfig.
    pub dir: tempfile::TempDir,
    /// `https://127.0.0.1:PORT`.
    pub server: String,
    /// A kubeconfig with the administrator's token.
    pub kubeconfig: PathBuf,
    /// etcd, the API server, the controller manager.
    processes: Vec<Child>,
    /// The API server's arguments, to start it again.
    api_server_args: Vec<String>,
}

/// Where `.ci/control-plane-build.sh` put the binaries.
fn binaries() -> PathBuf {
    let dir = std::env::var_os("GEMBATCH_K8S_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").expect("HOME"))
                .join(".cache/gembatch/control-plane")
        })
        .join("bin");
    assert!(
        dir.join("kube-apiserver").exists() && dir.join("kube-controller-manager").exists(),
        "the test control plane is not built: run .ci/control-plane-build.sh (about 8 minutes, once; .ci/setup does)"
    );
    dir
}

/// The API server's serving certificate (see `certs`), the service-account key pair, and
/// the token file.
fn credentials(dir: &Path) {
    super::certs::serving_certificate(dir, "kube-apiserver");
    super::certs::openssl(dir, &["genrsa", "-out", "sa.key", "2048"]);
    super::certs::openssl(dir, &["rsa", "-in", "sa.key", "-pubout", "-out", "sa.pub"]);
    std::fs::write(
        dir.join("tokens.csv"),
        format!(
            // The controller manager runs every controller under its own identity
            // (no per-controller service accounts): it needs the masters group.
            "{ADMIN_TOKEN},admin,admin,\"system:masters\"\n{CONTROLLER_TOKEN},system:kube-controller-manager,kcm,\"system:masters\"\n"
        ),
    )
    .unwrap();
}

/// A kube client with the identity of `kubeconfig`, on a runtime of the caller's.
pub async fn client_from(kubeconfig: &Path) -> kube::Client {
    let config = kube::config::Kubeconfig::read_from(kubeconfig).expect("kubeconfig");
    let options = kube::config::KubeConfigOptions::default();
    let config = kube::Config::from_custom_kubeconfig(config, &options)
        .await
        .expect("client configuration");
    kube::Client::try_from(config).expect("client")
}

/// A kubeconfig for `server` with `token`.
pub fn kubeconfig(dir: &Path, name: &str, server: &str, token: &str, namespace: &str) -> PathBuf {
    let ca = dir.join("ca.crt");
    let text = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: test\n  cluster:\n    server: {server}\n    certificate-authority: {}\n\
         users:\n- name: {name}\n  user:\n    token: {token}\ncontexts:\n- name: test\n  context:\n    cluster: test\n    user: {name}\n    namespace: {namespace}\n\
         current-context: test\n",
        ca.display()
    );
    let path = dir.join(format!("{name}.kubeconfig"));
    std::fs::write(&path, text).unwrap();
    path
}

fn spawn(dir: &Path, name: &str, program: &Path, args: &[String]) -> Child {
    let log = std::fs::File::create(dir.join(format!("{name}.log"))).unwrap();
    Command::new(program)
        .args(args)
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap_or_else(|err| panic!("start {name}: {err}"))
}

impl Cluster {
    /// Starts etcd, the API server and the controller manager; returns once the API server
    /// is ready.
    pub fn start() -> Cluster {
        let bin = binaries();
        let dir = tempfile::tempdir().expect("a directory for the cluster");
        let path = dir.path();
        credentials(path);
        let (etcd_client, etcd_peer, api_port) = (unused_port(), unused_port(), unused_port());
        let text = |p: &str| path.join(p).display().to_string();
        let mut processes = Vec::new();
        processes.push(spawn(
            path,
            "etcd",
            Path::new("etcd"),
            &[
                format!("--data-dir={}", text("etcd")),
                format!("--listen-client-urls=http://127.0.0.1:{etcd_client}"),
                format!("--advertise-client-urls=http://127.0.0.1:{etcd_client}"),
                format!("--listen-peer-urls=http://127.0.0.1:{etcd_peer}"),
                format!("--initial-advertise-peer-urls=http://127.0.0.1:{etcd_peer}"),
                format!("--initial-cluster=default=http://127.0.0.1:{etcd_peer}"),
            ],
        ));
        let api_server_args = vec![
            format!("--etcd-servers=http://127.0.0.1:{etcd_client}"),
            "--bind-address=127.0.0.1".into(),
            format!("--secure-port={api_port}"),
            "--insecure-port=0".into(),
            "--advertise-address=127.0.0.1".into(),
            "--endpoint-reconciler-type=none".into(),
            format!("--tls-cert-file={}", text("server.crt")),
            format!("--tls-private-key-file={}", text("server.key")),
            format!("--client-ca-file={}", text("ca.crt")),
            format!("--token-auth-file={}", text("tokens.csv")),
            "--authorization-mode=RBAC".into(),
            "--service-account-issuer=https://kubernetes.default.svc".into(),
            format!("--service-account-key-file={}", text("sa.pub")),
            format!("--service-account-signing-key-file={}", text("sa.key")),
            "--service-cluster-ip-range=10.0.0.0/24".into(),
            // ttlSecondsAfterFinished (beta and on by default from v1.21).
            "--feature-gates=TTLAfterFinished=true".into(),
        ];
        processes.push(spawn(
            path,
            "kube-apiserver",
            &bin.join("kube-apiserver"),
            &api_server_args,
        ));
        let server = format!("https://127.0.0.1:{api_port}");
        let mut cluster = Cluster {
            kubeconfig: kubeconfig(path, "admin", &server, ADMIN_TOKEN, "default"),
            server,
            processes,
            api_server_args,
            dir,
        };
        cluster.wait_ready();
        let controller = kubeconfig(
            cluster.dir.path(),
            "kcm",
            &cluster.server,
            CONTROLLER_TOKEN,
            "default",
        );
        let path = cluster.dir.path();
        let text = |p: &str| path.join(p).display().to_string();
        let manager = spawn(
            path,
            "kube-controller-manager",
            &bin.join("kube-controller-manager"),
            &[
                format!("--kubeconfig={}", controller.display()),
                "--leader-elect=false".into(),
                "--controllers=*".into(),
                "--use-service-account-credentials=false".into(),
                format!("--service-account-private-key-file={}", text("sa.key")),
                format!("--root-ca-file={}", text("ca.crt")),
                format!("--cluster-signing-cert-file={}", text("ca.crt")),
                format!("--cluster-signing-key-file={}", text("ca.key")),
                format!("--flex-volume-plugin-dir={}", text("flex")),
                "--feature-gates=TTLAfterFinished=true".into(),
            ],
        );
        cluster.processes.push(manager);
        cluster
    }

    /// Stops the API server (every watch on it breaks) and starts it again on the same
    /// port and etcd; returns once it is ready.
    pub fn restart_api_server(&mut self) {
        self.stop_api_server();
        self.start_api_server();
    }

    /// Stops the API server: every call fails until [`Cluster::start_api_server`].
    pub fn stop_api_server(&mut self) {
        let api_server = &mut self.processes[1];
        let _ = api_server.kill();
        let _ = api_server.wait();
    }

    /// Starts the stopped API server again on the same port and etcd; returns once ready.
    pub fn start_api_server(&mut self) {
        self.processes[1] = spawn(
            self.dir.path(),
            "kube-apiserver",
            &binaries().join("kube-apiserver"),
            &self.api_server_args,
        );
        self.wait_ready();
    }

    fn wait_ready(&mut self) {
        let started = Instant::now();
        loop {
            let ready = Command::new("curl")
                .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "--cacert"])
                .arg(self.dir.path().join("ca.crt"))
                .args(["-H", &format!("Authorization: Bearer {ADMIN_TOKEN}")])
                .arg(format!("{}/readyz", self.server))
                .output()
                .map(|out| String::from_utf8_lossy(&out.stdout).into_owned());
            if ready.is_ok_and(|code| code == "200") {
                return;
            }
            for (index, process) in self.processes.iter_mut().enumerate() {
                if let Ok(Some(status)) = process.try_wait() {
                    let name = ["etcd", "kube-apiserver"][index.min(1)];
                    let log = std::fs::read_to_string(self.dir.path().join(format!("{name}.log")))
                        .unwrap_or_default();
                    let tail: Vec<&str> = log.lines().rev().take(15).collect();
                    panic!(
                        "{name} exited ({status}):\n{}",
                        tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                    );
                }
            }
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "the API server was not ready in 60 s"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// A kube client as the administrator, on a runtime of the caller's.
    pub async fn client(&self) -> kube::Client {
        client_from(&self.kubeconfig).await
    }

    /// Installs the upstream ProvisioningRequest CRD.
    pub async fn install_provisioning_request_crd(&self, client: &kube::Client) {
        install_crd(
            client,
            "tests/data/provisioningrequests.crd.yaml",
            "autoscaling.x-k8s.io",
        )
        .await;
    }

    /// Installs Kueue's LocalQueue CRD.
    pub async fn install_kueue_crd(&self, client: &kube::Client) {
        install_crd(
            client,
            "tests/data/kueue.x-k8s.io_localqueues.yaml",
            "kueue.x-k8s.io",
        )
        .await;
    }
}

/// Creates the CRD in the YAML file `path` (its CEL rules removed) and waits until the API
/// server serves its `group`.
async fn install_crd(client: &kube::Client, path: &str, group: &str) {
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
    let text = std::fs::read_to_string(path).unwrap();
    let mut value: serde_json::Value = serde_saphyr::from_str(&text).expect("the CRD parses");
    strip_validations(&mut value);
    let crd: CustomResourceDefinition = serde_json::from_value(value).expect("a CRD");
    let crds: kube::Api<CustomResourceDefinition> = kube::Api::all(client.clone());
    crds.create(&Default::default(), &crd)
        .await
        .expect("create the CRD");
    // Established once the API server serves it.
    let started = Instant::now();
    while kube::discovery::group(client, group).await.is_err() {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the CRD of {group} was not served"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// v1.20 refuses CEL rules (`x-kubernetes-validations`): removed everywhere.
fn strip_validations(value: &mut serde_json::Value) {
    match value {
        serde_json::Value::Object(map) => {
            map.remove("x-kubernetes-validations");
            map.values_mut().for_each(strip_validations);
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(strip_validations),
        _ => {}
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for process in self.processes.iter_mut().rev() {
            let _ = process.kill();
            let _ = process.wait();
        }
    }
}

impl Cluster {
    /// Applies the ServiceAccount, Role and RoleBinding of `manifests/nightly_batch.yaml` in
    /// their namespace (created first) and returns a kubeconfig with that ServiceAccount's
    /// token: a client with exactly the runner's permissions.
    pub async fn runner_kubeconfig(&self, client: &kube::Client) -> PathBuf {
        use k8s_openapi::api::core::v1::{Namespace, Secret, ServiceAccount};
        use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
        let text = std::fs::read_to_string("manifests/nightly_batch.yaml").unwrap();
        let documents: Vec<serde_json::Value> = serde_saphyr::from_multiple(&text).unwrap();
        let pick = |kind: &str| {
            documents
                .iter()
                .find(|doc| doc["kind"] == kind)
                .cloned()
                .unwrap_or_else(|| panic!("no {kind} in nightly_batch.yaml"))
        };
        let account: ServiceAccount = serde_json::from_value(pick("ServiceAccount")).unwrap();
        let namespace = account.metadata.namespace.clone().unwrap();
        let namespaces: kube::Api<Namespace> = kube::Api::all(client.clone());
        let made: Namespace =
            serde_json::from_value(serde_json::json!({"metadata": {"name": namespace}})).unwrap();
        namespaces.create(&Default::default(), &made).await.unwrap();
        let post = kube::api::PostParams::default();
        let accounts: kube::Api<ServiceAccount> = kube::Api::namespaced(client.clone(), &namespace);
        accounts.create(&post, &account).await.unwrap();
        let roles: kube::Api<Role> = kube::Api::namespaced(client.clone(), &namespace);
        roles
            .create(&post, &serde_json::from_value(pick("Role")).unwrap())
            .await
            .unwrap();
        let bindings: kube::Api<RoleBinding> = kube::Api::namespaced(client.clone(), &namespace);
        bindings
            .create(&post, &serde_json::from_value(pick("RoleBinding")).unwrap())
            .await
            .unwrap();
        // v1.20's token controller puts the account's token in a Secret it names.
        let started = Instant::now();
        let secrets: kube::Api<Secret> = kube::Api::namespaced(client.clone(), &namespace);
        let name = account.metadata.name.clone().unwrap();
        let token = loop {
            let listed = secrets.list(&Default::default()).await.unwrap();
            let found =
                listed.items.into_iter().find(|secret| {
                    secret.type_.as_deref() == Some("kubernetes.io/service-account-token")
                        && secret.metadata.annotations.as_ref().is_some_and(|a| {
                            a.get("kubernetes.io/service-account.name") == Some(&name)
                        })
                });
            if let Some(token) = found
                .and_then(|s| s.data)
                .and_then(|d| d.get("token").cloned())
            {
                break String::from_utf8(token.0).unwrap();
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "no token for {name}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        kubeconfig(self.dir.path(), "runner", &self.server, &token, &namespace)
    }
}
