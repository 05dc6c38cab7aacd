//! Every energy command and query against an in-memory database, without a network.

use panal_raft::rusqlite::Connection;
use panal_raft::{Application, ApplyContext};

use super::*;
use crate::{Command, PanalApp};

const OWNER: Actor = Actor { user_id: 1, admin: false };
const STRANGER: Actor = Actor { user_id: 2, admin: false };
const ADMIN: Actor = Actor { user_id: 3, admin: true };
const T0: i64 = 1_793_491_200_000; // 2026-11-01T00:00:00Z

fn db() -> Connection {
    let db = Connection::open_in_memory().unwrap();
    PanalApp.migrate(&db).unwrap();
    db
}

fn run(db: &Connection, c: EnergyCommand) -> Response {
    PanalApp.apply(db, &ApplyContext { index: 1, now_ms: T0 }, Command::Energy(c)).unwrap()
}

fn device(db: &Connection, kind: DeviceKind) -> Device {
    let new = NewDevice { name: "home".into(), kind };
    match run(db, EnergyCommand::CreateDevice { owner_id: OWNER.user_id, device: new }).unwrap() {
        Reply::Device(d) => d,
        other => panic!("{other:?}"),
    }
}

fn hourly(from: i64, hours: i64, c: f64, g: Option<f64>) -> Vec<ReadingRow> {
    (0..hours)
        .map(|h| ReadingRow { ts_ms: from + h * time::HOUR_MS, consumption_kwh: Some(c), generation_kwh: g })
        .collect()
}

#[test]
fn readings_aggregate_by_hour_day_and_month() {
    let db = db();
    let d = device(&db, DeviceKind::Meter);
    // 30 days of hourly readings (1 kWh each), plus a second reading inside the first hour.
    let mut rows = hourly(T0, 30 * 24, 1.0, Some(0.5));
    rows.push(ReadingRow { ts_ms: T0 + 60_000, consumption_kwh: Some(3.0), generation_kwh: None });
    assert_eq!(
        run(&db, EnergyCommand::AddReadings { device_id: d.id, actor: OWNER, readings: rows.clone() }).unwrap(),
        Reply::Count(721)
    );
    // Sent again: replaced, not doubled.
    run(&db, EnergyCommand::AddReadings { device_id: d.id, actor: OWNER, readings: rows }).unwrap();
    let hours = readings(&db, d.id, Bucket::Hour, i64::MIN, i64::MAX, 1000, None).unwrap();
    assert_eq!(hours.items.len(), 720);
    let first = &hours.items[0];
    assert_eq!(first.count, 2);
    assert_eq!(first.consumption_kwh, Some(Stats { sum: 4.0, min: 1.0, max: 3.0 }));
    assert_eq!(first.generation_kwh, Some(Stats { sum: 0.5, min: 0.5, max: 0.5 }));
    let days = readings(&db, d.id, Bucket::Day, i64::MIN, i64::MAX, 10, None).unwrap();
    assert_eq!(days.items.len(), 10);
    assert_eq!(days.items[1].consumption_kwh.unwrap().sum, 24.0);
    let cursor: i64 = days.next_cursor.unwrap().parse().unwrap();
    let rest = readings(&db, d.id, Bucket::Day, i64::MIN, i64::MAX, 100, Some(cursor)).unwrap();
    assert_eq!(rest.items.len(), 20);
    let months = readings(&db, d.id, Bucket::Month, i64::MIN, i64::MAX, 10, None).unwrap();
    assert_eq!(months.items.len(), 1);
    assert_eq!(months.items[0].start_ms, T0);
    assert_eq!(months.items[0].count, 721);
    let window = readings(&db, d.id, Bucket::Raw, T0, T0 + time::HOUR_MS, 10, None).unwrap();
    assert_eq!(window.items.len(), 2);
}

#[test]
fn summary_covers_the_users_devices_only() {
    let db = db();
    let meter = device(&db, DeviceKind::Meter);
    let solar = device(&db, DeviceKind::Solar);
    run(&db, EnergyCommand::AddReadings { device_id: meter.id, actor: OWNER, readings: hourly(T0, 10, 2.0, None) })
        .unwrap();
    let gen: Vec<ReadingRow> = (0..10)
        .map(|h| ReadingRow { ts_ms: T0 + h * time::HOUR_MS, consumption_kwh: None, generation_kwh: Some(0.5) })
        .collect();
    run(&db, EnergyCommand::AddReadings { device_id: solar.id, actor: OWNER, readings: gen }).unwrap();
    let s = summary(&db, OWNER.user_id, None, None).unwrap();
    assert_eq!((s.devices, s.readings), (2, 20));
    assert_eq!((s.consumption_kwh, s.generation_kwh, s.net_kwh), (20.0, 5.0, 15.0));
    assert_eq!(s.self_sufficiency, Some(0.25));
    let none = summary(&db, STRANGER.user_id, None, None).unwrap();
    assert_eq!((none.devices, none.consumption_kwh, none.self_sufficiency), (0, 0.0, None));
}

#[test]
fn strangers_cannot_see_or_change_devices_but_admins_can() {
    let db = db();
    let d = device(&db, DeviceKind::Meter);
    let patch = DevicePatch { name: Some("x".into()), kind: None };
    let r = run(&db, EnergyCommand::UpdateDevice { device_id: d.id, actor: STRANGER, patch: patch.clone() });
    assert_eq!(r.unwrap_err().code, "not_found");
    let r =
        run(&db, EnergyCommand::AddReadings { device_id: d.id, actor: STRANGER, readings: hourly(T0, 1, 1.0, None) });
    assert_eq!(r.unwrap_err().code, "not_found");
    assert!(visible_device(&db, d.id, STRANGER).unwrap().is_err());
    assert!(visible_device(&db, d.id, ADMIN).unwrap().is_ok());
    assert_eq!(list_devices(&db, STRANGER, 10, 0).unwrap().items.len(), 0);
    assert_eq!(list_devices(&db, ADMIN, 10, 0).unwrap().items.len(), 1);
    let r = run(&db, EnergyCommand::UpdateDevice { device_id: d.id, actor: ADMIN, patch });
    assert!(matches!(r.unwrap(), Reply::Device(d) if d.name == "x"));
    run(&db, EnergyCommand::AddReadings { device_id: d.id, actor: OWNER, readings: hourly(T0, 3, 1.0, None) }).unwrap();
    run(&db, EnergyCommand::DeleteDevice { device_id: d.id, actor: OWNER }).unwrap();
    let left: i64 = db.query_row("SELECT count(*) FROM readings", [], |r| r.get(0)).unwrap();
    assert_eq!(left, 0, "a deleted device takes its readings with it");
}

#[test]
fn invalid_readings_and_battery_samples_on_other_kinds_are_refused() {
    let db = db();
    let meter = device(&db, DeviceKind::Meter);
    let bad = vec![ReadingRow { ts_ms: T0, consumption_kwh: Some(f64::NAN), generation_kwh: None }];
    let r = run(&db, EnergyCommand::AddReadings { device_id: meter.id, actor: OWNER, readings: bad });
    assert_eq!(r.unwrap_err().code, "validation_failed");
    let empty = vec![ReadingRow { ts_ms: T0, consumption_kwh: None, generation_kwh: None }];
    assert!(run(&db, EnergyCommand::AddReadings { device_id: meter.id, actor: OWNER, readings: empty }).is_err());
    let sample =
        battery::BatterySample { ts_ms: T0, soc_pct: 50.0, voltage_v: 48.0, current_a: 1.0, temperature_c: None };
    let r =
        run(&db, EnergyCommand::AddBatterySamples { device_id: meter.id, actor: OWNER, samples: vec![sample.clone()] });
    assert_eq!(r.unwrap_err().code, "not_a_battery");
    let bat = device(&db, DeviceKind::Battery);
    run(&db, EnergyCommand::AddBatterySamples { device_id: bat.id, actor: OWNER, samples: vec![sample.clone()] })
        .unwrap();
    assert_eq!(battery_samples(&db, bat.id, i64::MIN, i64::MAX).unwrap(), vec![sample]);
}

#[test]
fn consumption_series_has_one_slot_per_hour_with_gaps() {
    let db = db();
    let d = device(&db, DeviceKind::Meter);
    let mut rows = hourly(T0, 5, 1.0, None);
    rows.remove(2);
    run(&db, EnergyCommand::AddReadings { device_id: d.id, actor: OWNER, readings: rows }).unwrap();
    let (first, series) = consumption_series(&db, Some(d.id), OWNER.user_id, time::HOUR_MS, 1000).unwrap().unwrap();
    assert_eq!(first, T0);
    assert_eq!(series, vec![Some(1.0), Some(1.0), None, Some(1.0), Some(1.0)]);
    let (_, last3) = consumption_series(&db, None, OWNER.user_id, time::HOUR_MS, 3).unwrap().unwrap();
    assert_eq!(last3, vec![Some(1.0), Some(1.0)], "starts at the first slot with data in the window");
    assert!(consumption_series(&db, None, STRANGER.user_id, time::HOUR_MS, 10).unwrap().is_none());
}
