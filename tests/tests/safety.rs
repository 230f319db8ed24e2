//! One writer per fabric, crash safety and transactional `up`, with the real `iqd` binary:
//! concurrent `up`/`down` of one fabric, `up` killed with SIGKILL at many points, refusals
//! that change nothing, and a step failing midway (injected with `IQD_FAILPOINT`, honoured by
//! debug builds only) that rolls the fabric back. Runs on one data path: the lock, the state
//! file and the plan do not depend on it.
use std::{
    fs,
    path::Path,
    process::{Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use iqd_tests::{
    fixture::{FabricFile, Nic},
    in_netns, iqd_bin, links, netns_with_prefix, ping, text, TestFabric,
};

/// LPAR `L<i>`, in namespace `{ns}l<i>`, with `nics`.
fn with_lpar(file: FabricFile, i: usize, nics: impl IntoIterator<Item = Nic>) -> FabricFile {
    file.lpar(&format!("L{i}"), &format!("{{ns}}l{i}"), nics)
}

/// The NIC of `L<i>`: on CHPID F0, 10.60.0.<i+1>.
fn nic(i: usize) -> Nic {
    Nic::new("F0", [format!("{}/24", address(i))])
}

/// `lpars` LPARs with one NIC each on CHPID F0, 10.60.0.<i+1>, in namespaces `{ns}l<i>`.
fn fabric_file(lpars: usize) -> FabricFile {
    (0..lpars).fold(FabricFile::test().chpid("F0"), |file, i| {
        with_lpar(file, i, [nic(i)])
    })
}

fn address(i: usize) -> String {
    format!("10.60.0.{}", i + 1)
}

/// Every NIC is online and every LPAR reaches every other one.
fn assert_whole(fabric: &TestFabric, lpars: usize) {
    let status: serde_json::Value =
        serde_json::from_str(&fabric.iqd_ok_args("status", &["--json"])).expect("status JSON");
    let nics: Vec<&serde_json::Value> = status["lpars"]
        .as_array()
        .expect("lpars")
        .iter()
        .flat_map(|l| l["nics"].as_array().expect("nics"))
        .collect();
    assert_eq!(nics.len(), lpars, "{status}");
    for nic in nics {
        assert_eq!(nic["state"], "online", "{status}");
    }
    for i in 0..lpars {
        let others: Vec<String> = (0..lpars).filter(|j| *j != i).map(address).collect();
        let mut args = vec!["-q", "-r", "2", "-t", "500"];
        args.extend(others.iter().map(String::as_str));
        let out = in_netns(&fabric.ns(&format!("l{i}")), "fping", &args);
        assert!(
            out.status.success(),
            "L{i} does not reach every other LPAR: {}",
            text(&out)
        );
    }
}

/// What exists of the fabric, read from the system: every namespace of the fabric with its
/// interfaces (name, MAC, whether up, IPv4 addresses), and the ports of the fabric namespace
/// (by name: a port's own MAC is random).
fn snapshot(fabric: &TestFabric) -> Vec<String> {
    let fabric_ns = format!("iqd-{}", fabric.name);
    let mut namespaces = netns_with_prefix(&fabric.name);
    namespaces.push(fabric_ns.clone());
    let mut facts = Vec::new();
    for ns in namespaces {
        let out = in_netns(&ns, "ip", &["-j", "address", "show"]);
        let links: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        for link in links.as_array().into_iter().flatten() {
            let mut addrs: Vec<String> = link["addr_info"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|a| a["family"] == "inet")
                .map(|a| format!("{}/{}", a["local"], a["prefixlen"]))
                .collect();
            addrs.sort();
            let up = link["flags"]
                .as_array()
                .is_some_and(|f| f.iter().any(|f| f == "UP"));
            let mac = if ns == fabric_ns {
                "-".to_string()
            } else {
                link["address"].to_string()
            };
            facts.push(format!(
                "{ns} {} {mac} up={up} {}",
                link["ifname"],
                addrs.join(",")
            ));
        }
    }
    facts.sort();
    facts
}

/// Nothing of the fabric is left: namespaces, pins, state, lock.
fn assert_gone(fabric: &TestFabric) {
    assert_eq!(netns_with_prefix(&fabric.name), Vec::<String>::new());
    assert!(netns_with_prefix(&format!("iqd-{}", fabric.name)).is_empty());
    assert!(!Path::new("/sys/fs/bpf/iqd").join(&fabric.name).exists());
    assert!(!Path::new("/run/iqd").join(&fabric.name).exists());
    assert!(!Path::new("/run/iqd/locks")
        .join(format!("{}.lock", fabric.name))
        .exists());
}

#[test]
fn concurrent_ups_and_downs_leave_a_whole_fabric_and_down_leaves_nothing() {
    const LPARS: usize = 6;
    let fabric = TestFabric::write(fabric_file(LPARS));
    let mut waited = 0;
    for round in 0..2 {
        let children: Vec<_> = (0..8)
            .map(|i| {
                let command = if i % 2 == 0 { "up" } else { "down" };
                let child = Command::new(iqd_bin())
                    .args([command, "--config", fabric.config_arg()])
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped())
                    .spawn()
                    .expect("spawn iqd");
                (command, child)
            })
            .collect();
        for (command, child) in children {
            let out = child.wait_with_output().expect("wait for iqd");
            assert!(
                out.status.success(),
                "round {round}: iqd {command} failed: {}",
                text(&out)
            );
            if String::from_utf8_lossy(&out.stderr).contains("waiting for it to finish") {
                waited += 1;
            }
        }
    }
    assert!(waited > 0, "no writer ever waited for another");
    fabric.iqd_ok("up");
    assert_whole(&fabric, LPARS);
    fabric.iqd_ok("down");
    assert_gone(&fabric);
}

#[test]
fn up_killed_at_any_point_is_completed_by_the_next_up_and_removed_by_down() {
    const LPARS: usize = 8;
    let fabric = TestFabric::write(fabric_file(LPARS));
    // How long a whole `up` takes here, so the kill points spread over all of it.
    let started = Instant::now();
    fabric.iqd_ok("up");
    let whole = started.elapsed();
    fabric.iqd_ok("down");
    for point in 0..10u32 {
        let delay = whole * point / 10 + Duration::from_millis(point as u64);
        let mut child = Command::new(iqd_bin())
            .args(["up", "--config", fabric.config_arg()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn iqd up");
        thread::sleep(delay);
        // SAFETY: our own child, not yet reaped.
        unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGKILL) };
        let _ = child.wait();

        let out = fabric.iqd("up", &[]);
        assert!(
            out.status.success(),
            "up after a kill at {delay:?} (of {whole:?}) failed: {}",
            text(&out)
        );
        assert_whole(&fabric, LPARS);
        fabric.iqd_ok("down");
        assert_gone(&fabric);
    }
}

#[test]
fn a_foreign_interface_in_an_adopted_namespace_refuses_up_and_changes_nothing() {
    let fabric = TestFabric::write(fabric_file(2));
    let adopted = fabric.ns("l1");
    assert!(Command::new("ip")
        .args(["netns", "add", &adopted])
        .status()
        .expect("ip")
        .success());
    struct DeleteNetns(String);
    impl Drop for DeleteNetns {
        fn drop(&mut self) {
            let _ = Command::new("ip").args(["netns", "del", &self.0]).output();
        }
    }
    let _guard = DeleteNetns(adopted.clone());
    fabric.iqd_ok("up");

    // L1 gets a second NIC, but an interface iqd did not create holds the name hsi1.
    let out = in_netns(
        &adopted,
        "ip",
        &[
            "link", "add", "hsi1", "type", "veth", "peer", "name", "other",
        ],
    );
    assert!(out.status.success(), "{}", text(&out));
    let before = snapshot(&fabric);
    let grown = FabricFile::test().chpid("F0").chpid("F1");
    let grown = with_lpar(grown, 0, [nic(0)]);
    let grown = with_lpar(grown, 1, [nic(1), Nic::new("F1", ["10.61.0.2/24"])]);
    fabric.rewrite(grown);
    let out = fabric.iqd("up", &[]);
    assert!(!out.status.success(), "up must refuse: {}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("nothing was changed"), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "namespace {adopted} already has an interface hsi1 that iqd did not create"
        )),
        "{stderr}"
    );
    assert_eq!(snapshot(&fabric), before);
    assert!(ping(&fabric.ns("l0"), &address(1), 1, None));
    let mut names = links(&adopted);
    names.sort();
    assert_eq!(names, ["hsi0", "hsi1", "lo", "other"]);
}

#[test]
fn a_step_failing_midway_rolls_the_fabric_back_and_names_the_step() {
    let fabric = TestFabric::up(fabric_file(3));
    let before = snapshot(&fabric);

    // L2 leaves, L3 arrives, L1 changes its address; the NIC of L3 fails to configure.
    let changed = with_lpar(FabricFile::test().chpid("F0"), 0, [nic(0)]);
    let changed = with_lpar(changed, 1, [Nic::new("F0", ["10.60.0.22/24"])]);
    fabric.rewrite(with_lpar(changed, 3, [nic(3)]));
    let out = Command::new(iqd_bin())
        .args(["up", "--config", fabric.config_arg()])
        .env("IQD_FAILPOINT", "configure NIC L3/hsi0")
        .output()
        .expect("iqd up");
    assert!(!out.status.success(), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("configure NIC L3/hsi0"), "{stderr}");
    assert!(stderr.contains("rolled back"), "{stderr}");

    // As before the command: same namespaces, NICs and addresses; L2 still there, no L3.
    assert_eq!(snapshot(&fabric), before);
    assert!(
        ping(&fabric.ns("l0"), &address(1), 1, None),
        "L1's old address"
    );
    assert!(ping(&fabric.ns("l0"), &address(2), 1, None), "L2 is back");
    assert!(
        netns_with_prefix(&fabric.ns("l3")).is_empty(),
        "L3's namespace stayed"
    );

    // Without the failure, the change applies.
    fabric.iqd_ok("up");
    assert!(ping(&fabric.ns("l0"), "10.60.0.22", 1, None));
    assert!(ping(&fabric.ns("l0"), &address(3), 1, None));
    assert!(netns_with_prefix(&fabric.ns("l2")).is_empty());
}

#[test]
fn a_second_writer_waits_or_with_no_wait_fails_at_once_and_readers_never_wait() {
    let fabric = TestFabric::up(fabric_file(2));
    // Hold the fabric's lock as another writer would.
    let lock_path = Path::new("/run/iqd/locks").join(format!("{}.lock", fabric.name));
    let file = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(&lock_path)
        .expect("lock file");
    // SAFETY: a valid descriptor.
    assert_eq!(
        unsafe { libc::flock(std::os::fd::AsRawFd::as_raw_fd(&file), libc::LOCK_EX) },
        0
    );
    fs::write(&lock_path, "iqd up (pid 4242)\n").expect("holder");

    let started = Instant::now();
    let out = fabric.iqd("up", &["--no-wait"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!(
            "fabric {} is being changed by iqd up (pid 4242)",
            fabric.name
        )),
        "{stderr}"
    );
    assert!(started.elapsed() < Duration::from_secs(5));
    let out = fabric.iqd("down", &["--no-wait"]);
    assert!(!out.status.success(), "{}", text(&out));

    // Readers go on.
    fabric.iqd_ok("status");
    fabric.iqd_ok("stats");

    // A waiting writer says so and goes on once the lock is free.
    let waiting = Command::new(iqd_bin())
        .args(["up", "--config", fabric.config_arg()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("iqd up");
    thread::sleep(Duration::from_millis(500));
    drop(file);
    let out = waiting.wait_with_output().expect("wait");
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("waiting for it to finish"),
        "{}",
        text(&out)
    );
}
