//! The API's routes, one typed method each, grouped by area (orchestration, auth, catalog,
//! energy, cluster). Each is a thin call through [`Client`]'s transport in the parent module.

use super::*;

impl Client {
    // --- Orchestration (admin) ---------------------------------------------------------

    /// `GET /api/v1/services`: every service's spec and task counts.
    pub async fn services(&self) -> Result<Vec<ServiceView>, ClientError> {
        self.get("/api/v1/services").await
    }

    /// `GET /api/v1/services/{name}`.
    pub async fn service(&self, name: &str) -> Result<ServiceView, ClientError> {
        self.get(&format!("/api/v1/services/{name}")).await
    }

    /// `GET /api/v1/services/{name}/tasks`.
    pub async fn service_tasks(&self, name: &str) -> Result<Vec<TaskView>, ClientError> {
        self.get(&format!("/api/v1/services/{name}/tasks")).await
    }

    /// `PATCH /api/v1/services/{name}` (scale, placement, restart, rebalance).
    pub async fn update_service(&self, name: &str, update: &ServiceUpdate) -> Result<ServiceView, ClientError> {
        self.patch(&format!("/api/v1/services/{name}"), update).await
    }

    /// `PATCH /api/v1/cluster/nodes/{id}` (availability, labels).
    pub async fn update_node(&self, id: u64, update: &NodeUpdate) -> Result<NodeSettingsView, ClientError> {
        self.patch(&format!("/api/v1/cluster/nodes/{id}"), update).await
    }

    // --- Probes -----------------------------------------------------------------------

    /// `GET /ready` on node `i`: whether it answers 200 (within `timeout`).
    pub async fn is_ready(&self, i: usize, timeout: Duration) -> bool {
        let url = format!("{}/ready", self.nodes[i % self.nodes.len()]);
        matches!(self.http.get(url).timeout(timeout).send().await, Ok(r) if r.status().is_success())
    }

    /// `GET /health`: the node's name and role, served even without a leader.
    pub async fn health(&self) -> Result<serde_json::Value, ClientError> {
        self.get("/health").await
    }

    /// `GET /api/v1/{service}/ping`: the name of the node whose worker answered.
    pub async fn ping(&self, service: &str) -> Result<String, ClientError> {
        let answer = self.send(Method::GET, &format!("/api/v1/{service}/ping"), &Body::None, &[]).await?;
        Ok(answer.node.unwrap_or_default())
    }

    /// `GET /metrics`: the Prometheus text.
    pub async fn prometheus(&self) -> Result<String, ClientError> {
        let answer = self.send(Method::GET, "/metrics", &Body::None, &[]).await?;
        Ok(String::from_utf8_lossy(&answer.body).into_owned())
    }

    // --- Auth --------------------------------------------------------------------------

    /// Logs in and keeps the token for the following requests. Tries every node while they
    /// refuse connections.
    pub async fn login(&self, username: &str, password: &str) -> Result<TokenResponse, ClientError> {
        let req = LoginRequest { username: username.into(), password: password.into() };
        let token: TokenResponse = self.post("/api/v1/auth/login", &req).await?;
        self.set_token(Some(token.access_token.clone()));
        Ok(token)
    }

    pub async fn register(&self, user: &RegisterRequest) -> Result<User, ClientError> {
        self.post("/api/v1/auth/register", user).await
    }

    /// Registers `username` and logs in as them.
    pub async fn register_and_login(&self, username: &str, password: &str) -> Result<User, ClientError> {
        let user = self
            .register(&RegisterRequest { username: username.into(), password: password.into(), email: None })
            .await?;
        self.login(username, password).await?;
        Ok(user)
    }

    pub async fn logout(&self) -> Result<(), ClientError> {
        self.send(Method::POST, "/api/v1/auth/logout", &Body::None, &[]).await?;
        self.set_token(None);
        Ok(())
    }

    pub async fn me(&self) -> Result<User, ClientError> {
        self.get("/api/v1/auth/me").await
    }

    /// Adds a new token signing key (admin).
    pub async fn rotate_signing_key(&self) -> Result<KeyRotated, ClientError> {
        self.post_empty("/api/v1/auth/keys/rotate").await
    }

    // --- Catalog -----------------------------------------------------------------------

    pub async fn create_book(&self, book: &NewBook) -> Result<Book, ClientError> {
        self.post("/api/v1/books", book).await
    }

    pub async fn list_books(&self, query: &BookQuery) -> Result<Page<Book>, ClientError> {
        self.get(&with_query("/api/v1/books", query)?).await
    }

    pub async fn get_book(&self, id: i64) -> Result<Book, ClientError> {
        self.get(&format!("/api/v1/books/{id}")).await
    }

    pub async fn update_book(&self, id: i64, patch: &BookPatch) -> Result<Book, ClientError> {
        self.patch(&format!("/api/v1/books/{id}"), patch).await
    }

    pub async fn delete_book(&self, id: i64) -> Result<(), ClientError> {
        self.delete(&format!("/api/v1/books/{id}")).await
    }

    /// Places an order; with `idempotency_key`, a retry of the same order is answered
    /// with the first order instead of placing another.
    pub async fn place_order(&self, order: &NewOrder, idempotency_key: Option<&str>) -> Result<Order, ClientError> {
        let path = "/api/v1/orders";
        let headers: Vec<(&str, &str)> = idempotency_key.map(|k| ("idempotency-key", k)).into_iter().collect();
        let answer = self.send(Method::POST, path, &json_body(order)?, &headers).await?;
        decode(&Method::POST, path, &answer)
    }

    pub async fn list_orders(&self, page: &PageParams) -> Result<Page<Order>, ClientError> {
        self.get(&with_query("/api/v1/orders", page)?).await
    }

    pub async fn list_sales(&self, page: &PageParams) -> Result<Page<Order>, ClientError> {
        self.get(&with_query("/api/v1/sales", page)?).await
    }

    pub async fn get_order(&self, id: i64) -> Result<Order, ClientError> {
        self.get(&format!("/api/v1/orders/{id}")).await
    }

    pub async fn pay_order(&self, id: i64, card: &CardPayment) -> Result<Order, ClientError> {
        self.post(&format!("/api/v1/orders/{id}/pay"), card).await
    }

    pub async fn ship_order(&self, id: i64, ship: &ShipRequest) -> Result<Order, ClientError> {
        self.post(&format!("/api/v1/orders/{id}/ship"), ship).await
    }

    pub async fn invoice(&self, id: i64) -> Result<Invoice, ClientError> {
        self.get(&format!("/api/v1/orders/{id}/invoice")).await
    }

    // --- Energy ------------------------------------------------------------------------

    pub async fn create_device(&self, device: &NewDevice) -> Result<Device, ClientError> {
        self.post("/api/v1/devices", device).await
    }

    pub async fn list_devices(&self, page: &PageParams) -> Result<Page<Device>, ClientError> {
        self.get(&with_query("/api/v1/devices", page)?).await
    }

    pub async fn get_device(&self, id: i64) -> Result<Device, ClientError> {
        self.get(&format!("/api/v1/devices/{id}")).await
    }

    pub async fn update_device(&self, id: i64, patch: &DevicePatch) -> Result<Device, ClientError> {
        self.patch(&format!("/api/v1/devices/{id}"), patch).await
    }

    pub async fn delete_device(&self, id: i64) -> Result<(), ClientError> {
        self.delete(&format!("/api/v1/devices/{id}")).await
    }

    pub async fn add_readings(&self, device: i64, readings: &ReadingsInput) -> Result<ReadingsStored, ClientError> {
        self.post(&format!("/api/v1/devices/{device}/readings"), readings).await
    }

    pub async fn readings(&self, device: i64, query: &ReadingsQuery) -> Result<Page<Aggregate>, ClientError> {
        self.get(&with_query(&format!("/api/v1/devices/{device}/readings"), query)?).await
    }

    pub async fn energy_summary(&self, range: &RangeQuery) -> Result<EnergySummary, ClientError> {
        self.get(&with_query("/api/v1/energy/summary", range)?).await
    }

    /// Uploads a battery CSV (`timestamp,soc,voltage,current,temperature`).
    pub async fn upload_battery_csv(&self, device: i64, csv: &str) -> Result<BatteryUploaded, ClientError> {
        let path = format!("/api/v1/devices/{device}/battery.csv");
        let body = Body::Text { content_type: "text/csv", text: csv.to_string() };
        self.call(Method::POST, &path, body).await
    }

    /// The battery chart as SVG text.
    pub async fn battery_chart_svg(&self, device: i64, range: &RangeQuery) -> Result<String, ClientError> {
        let path = with_query(&format!("/api/v1/devices/{device}/battery/chart.svg"), range)?;
        let answer = self.send(Method::GET, &path, &Body::None, &[]).await?;
        Ok(String::from_utf8_lossy(&answer.body).into_owned())
    }

    pub async fn device_forecast(&self, device: i64, query: &ForecastQuery) -> Result<ForecastResponse, ClientError> {
        self.get(&with_query(&format!("/api/v1/devices/{device}/forecast"), query)?).await
    }

    pub async fn user_forecast(&self, query: &ForecastQuery) -> Result<ForecastResponse, ClientError> {
        self.get(&with_query("/api/v1/energy/forecast", query)?).await
    }

    // --- Cluster administration (admin) ------------------------------------------------

    pub async fn cluster_status(&self) -> Result<ClusterStatus, ClientError> {
        self.get("/api/v1/cluster/status").await
    }

    pub async fn cluster_nodes(&self) -> Result<Vec<NodeRow>, ClientError> {
        self.get("/api/v1/cluster/nodes").await
    }

    pub async fn promote(&self, id: u64) -> Result<(), ClientError> {
        self.post_empty::<serde_json::Value>(&format!("/api/v1/cluster/nodes/{id}/promote")).await.map(drop)
    }

    pub async fn demote(&self, id: u64) -> Result<(), ClientError> {
        self.post_empty::<serde_json::Value>(&format!("/api/v1/cluster/nodes/{id}/demote")).await.map(drop)
    }

    pub async fn remove_node(&self, id: u64) -> Result<(), ClientError> {
        self.delete(&format!("/api/v1/cluster/nodes/{id}")).await
    }

    pub async fn join_tokens(&self) -> Result<JoinTokens, ClientError> {
        self.get("/api/v1/cluster/tokens").await
    }

    /// The cluster CA and the answering node's certificate.
    pub async fn cluster_ca(&self) -> Result<CaInfo, ClientError> {
        self.get("/api/v1/cluster/ca").await
    }

    /// Begins a CA rotation (see `panal ca rotate`).
    pub async fn rotate_ca(&self) -> Result<crate::server::tls::CaRotated, ClientError> {
        self.post_empty("/api/v1/cluster/ca/rotate").await
    }

    /// Replaces the join token of `role` (`manager` or `worker`); returns the new token.
    pub async fn rotate_join_token(&self, role: &str) -> Result<String, ClientError> {
        #[derive(Deserialize)]
        struct Rotated {
            token: String,
        }
        let r: Rotated = self.post_empty(&format!("/api/v1/cluster/tokens/{role}/rotate")).await?;
        Ok(r.token)
    }

    /// `PUT /api/v1/cluster/kv/{key}`: the stored entry, whose `index` is the write's log
    /// index (with an idempotency key, a retry answers the first write's entry).
    pub async fn kv_put(&self, key: &str, value: &str, idempotency_key: Option<&str>) -> Result<KvEntry, ClientError> {
        let path = format!("/api/v1/cluster/kv/{key}");
        let body = Body::Text { content_type: "text/plain", text: value.to_string() };
        let headers: Vec<(&str, &str)> = idempotency_key.map(|k| ("idempotency-key", k)).into_iter().collect();
        let answer = self.send(Method::PUT, &path, &body, &headers).await?;
        decode(&Method::PUT, &path, &answer)
    }

    pub async fn kv_get(&self, key: &str) -> Result<KvEntry, ClientError> {
        self.get(&format!("/api/v1/cluster/kv/{key}")).await
    }

    /// The applied index and a checksum of the application tables of the node served by.
    pub async fn checksum(&self) -> Result<Checksum, ClientError> {
        self.get("/api/v1/cluster/checksum").await
    }

    /// Asks the node for a snapshot now; returns its index.
    pub async fn snapshot(&self) -> Result<u64, ClientError> {
        #[derive(Deserialize)]
        struct Taken {
            snapshot_index: u64,
        }
        let t: Taken = self.post_empty("/api/v1/cluster/snapshot").await?;
        Ok(t.snapshot_index)
    }

    /// Downloads a consistent SQLite copy of the state: (bytes, index it was taken at).
    pub async fn backup(&self) -> Result<(Vec<u8>, Option<u64>), ClientError> {
        let answer = self.send(Method::GET, "/api/v1/admin/backup", &Body::None, &[]).await?;
        Ok((answer.body, answer.index))
    }

    /// The latest sample of every member (`panal top`).
    pub async fn node_metrics(&self) -> Result<Vec<NodeMetrics>, ClientError> {
        self.get("/api/v1/metrics/nodes").await
    }

    /// Calls a chaos hook (`crash`, `isolate`, `panic`, `delay`) of a node started with `--chaos`.
    pub async fn chaos(&self, hook: &str, body: &serde_json::Value) -> Result<(), ClientError> {
        self.post::<_, serde_json::Value>(&format!("/api/v1/admin/chaos/{hook}"), body).await.map(drop)
    }
}
