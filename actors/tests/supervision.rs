//! The supervision tree against a real single-node replica. One test function: process
//! groups are process-global, so scenarios run in sequence on one tree.

use std::time::{Duration, Instant};

use panal_actors::services::{
    start_services, Envelope, Ping, RequestMeta, RestartPolicy, Service, ServiceContext, ServiceHealth, ServiceRequest,
    ServiceResponse, WorkerMsg,
};
use panal_actors::PanalApp;
use panal_raft::{NodeInfo, ReplicaConfig};
use ractor::rpc::CallResult;

async fn until<F: FnMut() -> bool>(what: &str, mut cond: F) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn members(service: Service) -> Vec<ractor::ActorCell> {
    ractor::pg::get_local_members(&service.group())
}

async fn ping(service: Service, cell: &ractor::ActorCell) -> ServiceResponse {
    let req = ServiceRequest::new(Ping { service }, RequestMeta::default());
    match ractor::rpc::call::<WorkerMsg, _, _>(
        cell,
        |reply| WorkerMsg::Call(Envelope::new(req), reply),
        Some(Duration::from_secs(5)),
    )
    .await
    .expect("send")
    {
        CallResult::Success(answer) => answer.open().expect("response"),
        _ => panic!("call failed"),
    }
}

fn panic_one(service: Service) -> ractor::ActorId {
    let cell = members(service).into_iter().next().expect("a worker");
    let id = cell.get_id();
    cell.send_message(WorkerMsg::Panic("test".into())).expect("send panic");
    id
}

#[tokio::test(flavor = "multi_thread")]
async fn supervisor_restarts_workers_then_fails_the_service_past_the_limit_and_retries() {
    let dir = tempfile::tempdir().unwrap();
    let node = NodeInfo { name: "t1".into(), ..Default::default() };
    let replica =
        panal_raft::Replica::open(ReplicaConfig::new(1, node, dir.path().to_path_buf(), "s".into()), PanalApp)
            .await
            .unwrap();
    replica.initialize().await.unwrap();
    let ctx = ServiceContext::new("t1".into(), replica);
    let policy = RestartPolicy {
        max_restarts: 3,
        window: Duration::from_secs(30),
        backoff_base: Duration::from_millis(1),
        backoff_max: Duration::from_millis(20),
        cooldown: Duration::from_millis(500),
    };
    start_services(ctx.clone(), 2, policy).await.unwrap();
    for s in Service::ALL {
        until("every pool to start", || members(s).len() == 2).await;
    }

    // A worker answers with its node's name.
    let resp = ping(Service::Auth, &members(Service::Auth)[0]).await;
    assert_eq!((resp.status, resp.node.as_str()), (200, "t1"));
    let body: serde_json::Value = serde_json::from_slice(&resp.body).expect("json");
    assert_eq!(body["service"], "auth");

    // One panic: the worker is replaced, the pool is full again.
    let dead = panic_one(Service::Auth);
    until("the panicked auth worker to be replaced", || {
        let m = members(Service::Auth);
        m.len() == 2 && m.iter().all(|c| c.get_id() != dead)
    })
    .await;
    // The supervisor publishes health after the new worker has joined its group.
    until("auth health to count two workers", || ctx.health()[&Service::Auth] == ServiceHealth::Running { workers: 2 })
        .await;

    // Past the limit (3 restarts in the window): marked failed, out of the group.
    for _ in 0..4 {
        until("a catalog worker", || !members(Service::Catalog).is_empty()).await;
        let dead = panic_one(Service::Catalog);
        until("the panicked worker to leave", || members(Service::Catalog).iter().all(|c| c.get_id() != dead)).await;
    }
    until("catalog to be marked failed", || matches!(ctx.health()[&Service::Catalog], ServiceHealth::Failed { .. }))
        .await;
    assert!(members(Service::Catalog).is_empty(), "a failed service leaves its process group");
    // Other services are unaffected.
    assert_eq!(members(Service::Energy).len(), 2);

    // After the cooldown it comes back with a full pool.
    until("catalog to come back after its cooldown", || members(Service::Catalog).len() == 2).await;
    until("catalog health to be running", || ctx.health()[&Service::Catalog] == ServiceHealth::Running { workers: 2 })
        .await;
    let resp = ping(Service::Catalog, &members(Service::Catalog)[0]).await;
    assert_eq!(resp.status, 200);
}
