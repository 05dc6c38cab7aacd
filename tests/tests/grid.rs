//! The GRID services end to end on a 3-node cluster: a device, 30 days of hourly readings
//! in batches, aggregates, battery CSV with and without errors, the chart, forecasts.

use panal_actors::energy::ops::{ReadingInput, ReadingsInput, ReadingsQuery};
use panal_actors::energy::{Bucket, DeviceKind, NewDevice};
use panal_tests::{Call, Cluster};
use serde_json::{json, Value};

const START: &str = "2026-10-01T00:00:00Z";

/// Hourly consumption with a daily and a weekly shape (deterministic, no noise source).
fn consumption(hour: usize) -> f64 {
    let day = (hour / 24) % 7;
    let h = hour % 24;
    let daily = 0.4 + 0.6 * (((h as f64 - 6.0) / 24.0 * std::f64::consts::TAU).sin().max(0.0));
    let weekly = if day >= 5 { 0.7 } else { 1.0 };
    let wobble = ((hour * 7919) % 13) as f64 / 100.0;
    (daily * weekly + wobble) * 1.5
}

/// RFC 3339 for `START` + `hour` hours (October has 31 days, so 30 days stay inside it).
fn ts(hour: usize) -> String {
    format!("2026-10-{:02}T{:02}:00:00Z", 1 + hour / 24, hour % 24)
}

#[tokio::test(flavor = "multi_thread")]
async fn the_grid_journey_from_readings_to_forecast() {
    let c = Cluster::start(3, 0, &[]).await;
    c.wait_mesh(0).await;
    let (_, grace) = c.user_client(0, "grace").await;
    let user = grace.token().unwrap();
    let on = |n: usize| grace.with_nodes(&[c.nodes[n].api()]).unwrap();
    let meter = NewDevice { name: "home meter".into(), kind: DeviceKind::Meter };
    let id = grace.create_device(&meter).await.unwrap().id;

    // 30 days of hourly readings in 3 batches, each through a different node.
    let hours = 30 * 24;
    for (n, chunk) in (0..hours).collect::<Vec<_>>().chunks(hours / 3).enumerate() {
        let readings: Vec<ReadingInput> = chunk
            .iter()
            .map(|&h| ReadingInput {
                ts: ts(h),
                consumption_kwh: Some(consumption(h)),
                generation_kwh: Some(if h % 24 == 12 { 0.5 } else { 0.0 }),
            })
            .collect();
        let stored = on(n).add_readings(id, &ReadingsInput::Batch { readings }).await.unwrap();
        assert_eq!(stored.stored, chunk.len() as u64);
    }
    let index = grace.last_index();
    // One more, alone, then a bad batch that names each bad reading and stores nothing.
    let one = c
        .send(
            1,
            Call::new("POST", format!("/api/v1/devices/{id}/readings"))
                .token(&user)
                .json(json!({"ts": ts(0), "consumption_kwh": consumption(0)})),
        )
        .await;
    assert_eq!(one.status, 201, "{}", one.text);
    let bad =
        json!([{"ts": "yesterday", "consumption_kwh": 1.0}, {"ts": ts(1), "consumption_kwh": -1.0}, {"ts": ts(2)}]);
    let r = c.send(2, Call::new("POST", format!("/api/v1/devices/{id}/readings")).token(&user).json(bad)).await;
    assert_eq!(r.status, 400, "{}", r.text);
    let fields: Vec<&str> =
        r.body["error"]["fields"].as_array().unwrap().iter().map(|f| f["field"].as_str().unwrap()).collect();
    assert_eq!(fields, ["readings[0].ts", "readings[1]", "readings[2]"]);

    // Aggregates, read on another node at session consistency.
    let days = c
        .send(
            2,
            Call::new("GET", format!("/api/v1/devices/{id}/readings?bucket=day&limit=31"))
                .token(&user)
                .after(index.max(one.index)),
        )
        .await;
    assert_eq!(days.status, 200, "{}", days.text);
    let items = days.body["items"].as_array().unwrap();
    assert_eq!(items.len(), 30);
    let day1: f64 = (0..24).map(consumption).sum();
    let got = items[0]["consumption_kwh"]["sum"].as_f64().unwrap();
    // Energy figures are given to the watt-hour.
    assert!((got - day1).abs() <= 5e-4, "day 1: {got} vs {day1}");
    assert_eq!(items[0]["count"], 24);
    assert_eq!(items[0]["ts"], START.replace('Z', ".000Z"));
    let hourly = |cursor: Option<String>| ReadingsQuery {
        bucket: Some(Bucket::Hour),
        limit: Some(500),
        cursor,
        ..Default::default()
    };
    let page = on(0).readings(id, &hourly(None)).await.unwrap();
    assert_eq!(page.items.len(), 500);
    let rest = on(0).readings(id, &hourly(page.next_cursor.clone())).await.unwrap();
    assert_eq!((rest.items.len(), rest.next_cursor), (220, None));
    let month = c
        .send(1, Call::new("GET", format!("/api/v1/devices/{id}/readings?bucket=month")).token(&user).after(index))
        .await;
    assert_eq!(month.body["items"][0]["count"], 720);
    let bad_range = c.send(1, Call::new("GET", format!("/api/v1/devices/{id}/readings?from=never")).token(&user)).await;
    assert_eq!(bad_range.status, 400, "{}", bad_range.text);
    let summary = c.send(1, Call::new("GET", "/api/v1/energy/summary").token(&user).after(index)).await;
    assert_eq!(summary.status, 200, "{}", summary.text);
    let total: f64 = (0..hours).map(consumption).sum();
    assert!((summary.body["consumption_kwh"].as_f64().unwrap() - total).abs() <= 5e-4, "{}", summary.text);
    assert!((summary.body["generation_kwh"].as_f64().unwrap() - 15.0).abs() < 1e-9);
    assert!(summary.body["self_sufficiency"].as_f64().unwrap() > 0.0);

    // Forecasts: enough history for the seasonal model, with intervals and a backtest.
    let f = c
        .send(
            2,
            Call::new("GET", format!("/api/v1/devices/{id}/forecast?horizon=24h&interval=hour"))
                .token(&user)
                .after(index),
        )
        .await;
    assert_eq!(f.status, 200, "{}", f.text);
    assert_eq!(f.body["model"], "mstl_ets", "{}", f.text);
    let points = f.body["points"].as_array().unwrap();
    assert_eq!(points.len(), 24);
    assert_eq!(points[0]["ts"], "2026-10-31T00:00:00.000Z");
    for p in points {
        let v = |k: &str| p[k].as_f64().unwrap();
        assert!(
            v("lower_95") <= v("lower_80")
                && v("lower_80") <= v("value")
                && v("value") <= v("upper_80")
                && v("upper_80") <= v("upper_95"),
            "{p}"
        );
    }
    assert!(f.body["backtest"]["mape"].as_f64().unwrap() < 30.0, "{}", f.body["backtest"]);
    let total = c.send(0, Call::new("GET", "/api/v1/energy/forecast?horizon=2d").token(&user).after(index)).await;
    assert_eq!((total.status, total.body["points"].as_array().map(Vec::len)), (200, Some(48)), "{}", total.text);
    let bad = c.send(0, Call::new("GET", format!("/api/v1/devices/{id}/forecast?horizon=1000d")).token(&user)).await;
    // Well-formed, beyond what a daily forecast may cover: a rule, not the schema.
    assert_eq!((bad.status, bad.body["error"]["code"].as_str()), (422, Some("rule_violated")), "{}", bad.text);

    // A new device with a few hours of history: too short for any forecast.
    let d2 = c
        .send(0, Call::new("POST", "/api/v1/devices").token(&user).json(json!({"name": "shed", "kind": "other"})))
        .await;
    let id2 = d2.body["id"].as_i64().unwrap();
    let few: Vec<Value> = (0..10).map(|h| json!({"ts": ts(h), "consumption_kwh": 1.0})).collect();
    let w = c.send(0, Call::new("POST", format!("/api/v1/devices/{id2}/readings")).token(&user).json(json!(few))).await;
    let short =
        c.send(1, Call::new("GET", format!("/api/v1/devices/{id2}/forecast")).token(&user).after(w.index)).await;
    assert_eq!(
        (short.status, short.body["error"]["code"].as_str()),
        (422, Some("insufficient_history")),
        "{}",
        short.text
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn battery_csv_errors_name_line_and_column_and_good_files_chart() {
    let c = Cluster::start(1, 0, &[]).await;
    let (_, user, _) = c.user(0, "bat").await;
    let d = c
        .send(
            0,
            Call::new("POST", "/api/v1/devices").token(&user).json(json!({"name": "powerwall", "kind": "battery"})),
        )
        .await;
    let id = d.body["id"].as_i64().unwrap();
    let upload =
        |csv: &str| Call::new("POST", format!("/api/v1/devices/{id}/battery.csv")).token(&user).text("text/csv", csv);

    let bad = "Time,SoC (%),Voltage,Current,Temp,Site\n2026-10-01T00:00:00Z,50,48.1,10,25,a\n2026-10-01T01:00:00Z,150,48.2,10,25,a\n2026-10-01T02:00:00Z,55,volts,10,25,a\n";
    let r = c.send(0, upload(bad)).await;
    // What is wrong inside a text/csv body is a rule its schema (a string) cannot express.
    assert_eq!((r.status, r.body["error"]["code"].as_str()), (422, Some("rule_violated")), "{}", r.text);
    let fields: Vec<String> = r.body["error"]["fields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["field"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(fields, ["line 3, column SoC (%)", "line 4, column Voltage"], "{}", r.text);
    let missing = c.send(0, upload("ts,voltage,current\n2026-10-01T00:00:00Z,48,1\n")).await;
    assert_eq!(missing.status, 422, "{}", missing.text);
    assert!(missing.text.contains("soc"), "{}", missing.text);

    // 48 hours: charge 20 → 90 % then discharge, at 48 V.
    let mut csv = String::from("timestamp,soc,voltage,current,temperature\n");
    for h in 0..48 {
        let (soc, current) =
            if h < 24 { (20.0 + h as f64 * 70.0 / 23.0, 10.0) } else { (90.0 - (h - 24) as f64 * 75.0 / 23.0, -10.0) };
        csv.push_str(
            &format!("2026-10-01T{:02}:00:00Z,{soc:.2},48,{current},25\n", h % 24)
                .replace("2026-10-01", if h < 24 { "2026-10-01" } else { "2026-10-02" }),
        );
    }
    let ok = c.send(0, upload(&csv)).await;
    assert_eq!(ok.status, 201, "{}", ok.text);
    assert_eq!(ok.body["stored"], 48);
    let s = &ok.body["summary"];
    assert_eq!(s["soc_min_pct"].as_f64(), Some(15.0));
    assert_eq!(s["soc_max_pct"].as_f64(), Some(90.0));
    assert!(s["energy_in_kwh"].as_f64().unwrap() > 10.0 && s["energy_out_kwh"].as_f64().unwrap() > 10.0, "{s}");
    assert!(s["seconds_below_20_pct"].as_f64().unwrap() > 0.0, "{s}");
    let stored = c
        .send(
            0,
            Call::new("GET", format!("/api/v1/devices/{id}/battery?from=2026-10-02T00:00:00Z"))
                .token(&user)
                .after(ok.index),
        )
        .await;
    assert_eq!(stored.body["summary"]["samples"], 24, "{}", stored.text);
    let chart = c
        .send(0, Call::new("GET", format!("/api/v1/devices/{id}/battery/chart.svg")).token(&user).after(ok.index))
        .await;
    assert_eq!(chart.status, 200);
    assert!(chart.content_type.starts_with("image/svg+xml"), "{}", chart.content_type);
    assert!(
        chart.text.starts_with("<svg") && chart.text.contains("<polyline") && chart.text.contains("powerwall"),
        "{}",
        &chart.text[..200.min(chart.text.len())]
    );
    let meter =
        c.send(0, Call::new("POST", "/api/v1/devices").token(&user).json(json!({"name": "m", "kind": "meter"}))).await;
    let not_battery = c
        .send(
            0,
            Call::new("POST", format!("/api/v1/devices/{}/battery.csv", meter.body["id"]))
                .token(&user)
                .text("text/csv", &csv)
                .after(meter.index),
        )
        .await;
    assert_eq!(
        (not_battery.status, not_battery.body["error"]["code"].as_str()),
        (422, Some("not_a_battery")),
        "{}",
        not_battery.text
    );
}
