//! Every energy command and query against an in-memory database, without a network.

use panal_raft::rusqlite::{params, Connection};
use panal_raft::{Application, ApplyContext};

use super::*;
use crate::{Command, PanalApp, Reply, Response};

const OWNER: Actor = Actor { user_id: 1, admin: false };
const STRANGER: Actor = Actor { user_id: 2, admin: false };
const ADMIN: Actor = Actor { user_id: 3, admin: true };
const T0: i64 = 1_793_491_200_000; // 2026-11-01T00:00:00Z
/// The cluster's time in these tests: after every reading they store.
const NOW: i64 = T0 + 400 * time::DAY_MS;

fn db() -> Connection {
    let db = Connection::open_in_memory().unwrap();
    PanalApp.migrate(&db).unwrap();
    db
}

fn run(db: &Connection, c: impl Into<EnergyCommand>) -> Response {
    run_at(db, NOW, c)
}

fn run_at(db: &Connection, now_ms: i64, c: impl Into<EnergyCommand>) -> Response {
    PanalApp.apply(db, &ApplyContext { index: 1, now_ms }, Command::Energy(c.into())).unwrap()
}

fn stored(db: &Connection) -> i64 {
    db.query_row("SELECT count(*) FROM readings", [], |r| r.get(0)).unwrap()
}

fn device(db: &Connection, kind: DeviceKind) -> Device {
    let new = NewDevice { name: "home".into(), kind };
    match run(db, command::CreateDevice { owner_id: OWNER.user_id, device: new }).unwrap() {
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
        run(&db, command::AddReadings { device_id: d.id, actor: OWNER, readings: rows.clone() }).unwrap(),
        Reply::Count(721)
    );
    // Sent again: replaced, not doubled.
    run(&db, command::AddReadings { device_id: d.id, actor: OWNER, readings: rows }).unwrap();
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
    run(&db, command::AddReadings { device_id: meter.id, actor: OWNER, readings: hourly(T0, 10, 2.0, None) }).unwrap();
    let gen: Vec<ReadingRow> = (0..10)
        .map(|h| ReadingRow { ts_ms: T0 + h * time::HOUR_MS, consumption_kwh: None, generation_kwh: Some(0.5) })
        .collect();
    run(&db, command::AddReadings { device_id: solar.id, actor: OWNER, readings: gen }).unwrap();
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
    let r = run(&db, command::UpdateDevice { device_id: d.id, actor: STRANGER, patch: patch.clone() });
    assert_eq!(r.unwrap_err().code, "not_found");
    let r = run(&db, command::AddReadings { device_id: d.id, actor: STRANGER, readings: hourly(T0, 1, 1.0, None) });
    assert_eq!(r.unwrap_err().code, "not_found");
    assert!(visible_device(&db, d.id, STRANGER).unwrap().is_err());
    assert!(visible_device(&db, d.id, ADMIN).unwrap().is_ok());
    assert_eq!(list_devices(&db, STRANGER, 10, 0).unwrap().items.len(), 0);
    assert_eq!(list_devices(&db, ADMIN, 10, 0).unwrap().items.len(), 1);
    let r = run(&db, command::UpdateDevice { device_id: d.id, actor: ADMIN, patch });
    assert!(matches!(r.unwrap(), Reply::Device(d) if d.name == "x"));
    run(&db, command::AddReadings { device_id: d.id, actor: OWNER, readings: hourly(T0, 3, 1.0, None) }).unwrap();
    run(&db, command::DeleteDevice { device_id: d.id, actor: OWNER }).unwrap();
    let left: i64 = db.query_row("SELECT count(*) FROM readings", [], |r| r.get(0)).unwrap();
    assert_eq!(left, 0, "a deleted device takes its readings with it");
}

#[test]
fn invalid_readings_and_battery_samples_on_other_kinds_are_refused() {
    let db = db();
    let meter = device(&db, DeviceKind::Meter);
    let bad = vec![ReadingRow { ts_ms: T0, consumption_kwh: Some(f64::NAN), generation_kwh: None }];
    let r = run(&db, command::AddReadings { device_id: meter.id, actor: OWNER, readings: bad });
    assert_eq!(r.unwrap_err().code, "validation_failed");
    let empty = vec![ReadingRow { ts_ms: T0, consumption_kwh: None, generation_kwh: None }];
    assert!(run(&db, command::AddReadings { device_id: meter.id, actor: OWNER, readings: empty }).is_err());
    let sample =
        battery::BatterySample { ts_ms: T0, soc_pct: 50.0, voltage_v: 48.0, current_a: 1.0, temperature_c: None };
    let r = run(&db, command::AddBatterySamples { device_id: meter.id, actor: OWNER, samples: vec![sample.clone()] });
    assert_eq!(r.unwrap_err().code, "not_a_battery");
    let bat = device(&db, DeviceKind::Battery);
    run(&db, command::AddBatterySamples { device_id: bat.id, actor: OWNER, samples: vec![sample.clone()] }).unwrap();
    assert_eq!(battery_samples(&db, bat.id, i64::MIN, i64::MAX).unwrap(), vec![sample]);
}

#[test]
fn consumption_series_has_one_slot_per_hour_with_gaps() {
    let db = db();
    let d = device(&db, DeviceKind::Meter);
    let mut rows = hourly(T0, 5, 1.0, None);
    rows.remove(2);
    run(&db, command::AddReadings { device_id: d.id, actor: OWNER, readings: rows }).unwrap();
    let values = |slots: Vec<Option<SlotReadings>>| slots.iter().map(|s| s.map(|s| s.value)).collect::<Vec<_>>();
    let (first, series) =
        consumption_series(&db, Some(d.id), OWNER.user_id, time::HOUR_MS, 1000, NOW).unwrap().unwrap();
    assert_eq!(first, T0);
    assert_eq!(values(series), vec![Some(1.0), Some(1.0), None, Some(1.0), Some(1.0)]);
    let (_, last3) = consumption_series(&db, None, OWNER.user_id, time::HOUR_MS, 3, NOW).unwrap().unwrap();
    assert_eq!(values(last3), vec![Some(1.0), Some(1.0)], "starts at the first slot with data in the window");
    assert!(consumption_series(&db, None, STRANGER.user_id, time::HOUR_MS, 10, NOW).unwrap().is_none());
}

#[test]
fn readings_from_the_future_are_refused_by_the_replicated_clock() {
    let db = db();
    let d = device(&db, DeviceKind::Meter);
    let at = |ts_ms| ReadingRow { ts_ms, consumption_kwh: Some(1.0), generation_kwh: None };
    let now = T0;
    // A little ahead (a meter's clock drifting) is fine; one reading far ahead refuses the batch.
    let fine = vec![at(now - time::HOUR_MS), at(now + MAX_AHEAD_MS)];
    assert_eq!(
        run_at(&db, now, command::AddReadings { device_id: d.id, actor: OWNER, readings: fine }),
        Ok(Reply::Count(2))
    );
    let future = vec![at(now - 2 * time::HOUR_MS), at(now + MAX_AHEAD_MS + 1)];
    let r =
        run_at(&db, now, command::AddReadings { device_id: d.id, actor: OWNER, readings: future.clone() }).unwrap_err();
    assert_eq!(r.code, "validation_failed");
    assert!(r.message.starts_with("readings[1].ts: "), "{}", r.message);
    assert!(r.message.contains("in the future"), "{}", r.message);
    assert_eq!(stored(&db), 2, "nothing of a refused batch is stored");
    // The clock the entry carries decides, including an advanced application clock.
    time::advance(&db, time::HOUR_MS).unwrap();
    assert_eq!(
        run_at(&db, now, command::AddReadings { device_id: d.id, actor: OWNER, readings: future }),
        Ok(Reply::Count(2))
    );
    assert_eq!(first_from_the_future(&[at(now)], now), None);
}

#[test]
fn an_owner_deletes_a_range_of_readings() {
    let db = db();
    let d = device(&db, DeviceKind::Meter);
    run(&db, command::AddReadings { device_id: d.id, actor: OWNER, readings: hourly(T0, 10, 1.0, None) }).unwrap();
    let delete = |actor, from_ms, to_ms| command::DeleteReadings { device_id: d.id, actor, from_ms, to_ms };
    let r = run(&db, delete(STRANGER, None, None));
    assert_eq!(r.unwrap_err().code, "not_found", "a stranger's device does not exist for them");
    let r = run(&db, delete(OWNER, Some(T0 + time::HOUR_MS), Some(T0)));
    assert_eq!(r.unwrap_err().code, "validation_failed");
    assert_eq!(stored(&db), 10);
    // [from, to): hours 2, 3 and 4.
    assert_eq!(
        run(&db, delete(OWNER, Some(T0 + 2 * time::HOUR_MS), Some(T0 + 5 * time::HOUR_MS))),
        Ok(Reply::Count(3))
    );
    let left: Vec<i64> = readings(&db, d.id, Bucket::Raw, i64::MIN, i64::MAX, 100, None)
        .unwrap()
        .items
        .iter()
        .map(|a| (a.start_ms - T0) / time::HOUR_MS)
        .collect();
    assert_eq!(left, [0, 1, 5, 6, 7, 8, 9]);
    // Open bounds: everything from hour 8 on, then everything.
    assert_eq!(run(&db, delete(OWNER, Some(T0 + 8 * time::HOUR_MS), None)), Ok(Reply::Count(2)));
    assert_eq!(run(&db, delete(ADMIN, None, None)), Ok(Reply::Count(5)));
    assert_eq!(stored(&db), 0);
}

#[test]
fn energy_figures_are_rounded_to_the_watt_hour() {
    let db = db();
    let d = device(&db, DeviceKind::Meter);
    // 0.1 + 0.2 + 0.3 is 0.6000000000000001 in binary floating point.
    let rows: Vec<ReadingRow> = [0.1, 0.2, 0.3]
        .iter()
        .enumerate()
        .map(|(i, c)| ReadingRow {
            ts_ms: T0 + i as i64 * 60_000,
            consumption_kwh: Some(*c),
            generation_kwh: Some(0.1),
        })
        .collect();
    run(&db, command::AddReadings { device_id: d.id, actor: OWNER, readings: rows }).unwrap();
    let hour = &readings(&db, d.id, Bucket::Hour, i64::MIN, i64::MAX, 10, None).unwrap().items[0];
    assert_eq!(hour.consumption_kwh.unwrap().sum, 0.6);
    assert_eq!(serde_json::to_value(hour).unwrap()["consumption_kwh"]["sum"].to_string(), "0.6");
    let s = summary(&db, OWNER.user_id, None, None).unwrap();
    let json = serde_json::to_value(&s).unwrap();
    assert_eq!((json["consumption_kwh"].to_string(), json["net_kwh"].to_string()), ("0.6".into(), "0.3".into()));
    assert_eq!(json["generation_kwh"].to_string(), "0.3");
    assert_eq!(s.self_sufficiency, Some(0.5));
    assert_eq!(round_kwh(17.419999999999998), 17.42);
    assert_eq!(round_kwh(1.23456), 1.235);
    assert_eq!(round_kwh(f64::MAX), f64::MAX);
}

#[test]
fn consumption_series_ends_with_the_last_finished_slot() {
    let db = db();
    let d = device(&db, DeviceKind::Meter);
    // Three whole days and three hours of today, then one reading stamped far ahead (stored
    // before such readings were refused: it must not move the series there).
    run(&db, command::AddReadings { device_id: d.id, actor: OWNER, readings: hourly(T0, 3 * 24 + 3, 1.4, None) })
        .unwrap();
    db.execute("INSERT INTO readings (device_id, ts_ms, consumption_kwh) VALUES (?1, ?2, 9.0)", params![d.id, NOW])
        .unwrap();
    let now = T0 + 3 * time::DAY_MS + 3 * time::HOUR_MS + 30 * time::MINUTE_MS;
    let (first, days) = consumption_series(&db, Some(d.id), OWNER.user_id, time::DAY_MS, 365, now).unwrap().unwrap();
    assert_eq!(first, T0);
    assert_eq!(days.len(), 3, "today is in progress: {days:?}");
    let whole = days[0].unwrap();
    assert_eq!((whole.count, whole.first_ms, whole.last_ms), (24, 0, 23 * time::HOUR_MS));
    assert!((whole.value - 33.6).abs() < 1e-9);
    let (_, hours) = consumption_series(&db, None, OWNER.user_id, time::HOUR_MS, 10_000, now).unwrap().unwrap();
    assert_eq!(hours.len(), 3 * 24 + 3, "up to the last whole hour: {}", hours.len());
    assert!(consumption_series(&db, None, OWNER.user_id, time::DAY_MS, 365, T0).unwrap().is_none());
}

#[test]
fn a_daily_forecast_ignores_the_day_in_progress() {
    use crate::prediction::forecast::{self, Interval};
    let db = db();
    let d = device(&db, DeviceKind::Meter);
    // Five weeks of a clean 33.6 kWh/day, starting at noon, read three hours into today.
    let start = T0 + 12 * time::HOUR_MS;
    let hours = 35 * 24 - 12 + 3;
    run(&db, command::AddReadings { device_id: d.id, actor: OWNER, readings: hourly(start, hours, 1.4, None) })
        .unwrap();
    let now = start + hours * time::HOUR_MS;
    let (_, slots) = consumption_series(&db, Some(d.id), OWNER.user_id, time::DAY_MS, 365, now).unwrap().unwrap();
    let history = forecast::complete_slots(&slots, time::DAY_MS);
    assert_eq!(history[0], None, "the first day began at noon");
    let f = forecast::forecast(&history, Interval::Day, 7).unwrap();
    for p in &f.points {
        assert!((p.value - 33.6).abs() < 1e-6, "day {}: {}", p.step, p.value);
    }
    assert!(f.backtest.mae < 1e-6, "{:?}", f.backtest);
}

#[test]
fn a_device_patch_that_changes_nothing_keeps_updated_at() {
    let db = db();
    let d = device(&db, DeviceKind::Meter);
    let later = NOW + time::HOUR_MS;
    let update = |patch| command::UpdateDevice { device_id: d.id, actor: OWNER, patch };
    assert_eq!(run_at(&db, later, update(DevicePatch::default())), Ok(Reply::Device(d.clone())));
    let same = DevicePatch { name: Some("home ".into()), kind: Some(DeviceKind::Meter) };
    assert_eq!(run_at(&db, later, update(same)), Ok(Reply::Device(d.clone())));
    let renamed = run_at(&db, later, update(DevicePatch { name: Some("flat".into()), kind: None }));
    assert!(matches!(renamed, Ok(Reply::Device(r)) if r.updated_ms == later && r.name == "flat"));
}
