//! Orchestration's lever on a node: the node supervisor sets a service's worker count and
//! restarts a service's workers; retired workers leave the process group at once (before
//! they stop). One test function:
//! process groups are process-global.

use std::time::{Duration, Instant};

use panal_actors::services::{
    start_services, NodeSupervisorMsg, RestartPolicy, Service, ServiceContext, ServiceHealth, RETIRE_GRACE,
};
use panal_actors::PanalApp;
use panal_raft::{NodeInfo, ReplicaConfig};

async fn until<F: FnMut() -> bool>(what: &str, mut cond: F) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn members(service: Service) -> usize {
    ractor::pg::get_local_members(&service.group()).len()
}

#[tokio::test(flavor = "multi_thread")]
async fn set_workers_grows_shrinks_and_stops_a_service() {
    let dir = tempfile::tempdir().unwrap();
    let node = NodeInfo { name: "r1".into(), ..Default::default() };
    let replica =
        panal_raft::Replica::open(ReplicaConfig::new(1, node, dir.path().to_path_buf(), "s".into()), PanalApp)
            .await
            .unwrap();
    replica.initialize().await.unwrap();
    let ctx = ServiceContext::new("r1".into(), replica);
    let sup = start_services(ctx.clone(), 2, RestartPolicy::default()).await.unwrap();
    until("catalog to start with 2 workers", || members(Service::Catalog) == 2).await;

    sup.send_message(NodeSupervisorMsg::SetWorkers(Service::Catalog, 4)).unwrap();
    until("catalog to grow to 4", || members(Service::Catalog) == 4).await;

    let asked = Instant::now();
    sup.send_message(NodeSupervisorMsg::SetWorkers(Service::Catalog, 0)).unwrap();
    until("catalog to leave its group", || members(Service::Catalog) == 0).await;
    assert!(asked.elapsed() < RETIRE_GRACE, "workers leave the group before their grace ends");
    until("health to show no catalog worker", || {
        ctx.health().get(&Service::Catalog) == Some(&ServiceHealth::Running { workers: 0 })
    })
    .await;
    // Other services are untouched, and a stopped service comes back when asked.
    assert_eq!(members(Service::Auth), 2);
    sup.send_message(NodeSupervisorMsg::SetWorkers(Service::Catalog, 1)).unwrap();
    until("catalog to come back with 1 worker", || members(Service::Catalog) == 1).await;

    // A restart replaces every worker, the new ones joining before the old ones leave.
    let ids = || -> Vec<ractor::ActorId> {
        ractor::pg::get_local_members(&Service::Auth.group()).iter().map(|c| c.get_id()).collect()
    };
    let before = ids();
    sup.send_message(NodeSupervisorMsg::Restart(Service::Auth)).unwrap();
    until("auth to have two new workers", || {
        let now = ids();
        now.len() == 2 && now.iter().all(|id| !before.contains(id))
    })
    .await;
    assert!(members(Service::Auth) >= 2);
}
