//! Tests of the battery module.

use super::*;

const T0: i64 = 1_714_564_800_000; // 2024-05-01T12:00:00Z

fn sample(ts_ms: i64, soc_pct: f64, voltage_v: f64, current_a: f64) -> BatterySample {
    BatterySample { ts_ms, soc_pct, voltage_v, current_a, temperature_c: None }
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-9
}

fn one_error(text: &str) -> CsvError {
    let errors = parse_csv(text).unwrap_err();
    assert_eq!(errors.len(), 1, "{errors:?}");
    errors.into_iter().next().unwrap()
}

#[test]
fn parses_shuffled_columns_and_rows_with_extra_columns() {
    let text = "Voltage_V , note, SoC (%),TIMESTAMP, Temp_C ,Current_A,extra\n\
                48.5,later,55,2024-05-01T12:02:00Z,25.5,-3,x\n\
                48.1,\"a, quoted\",50,2024-05-01T12:00:00Z,,10,y\n\
                48.3,,52.5,2024-05-01T12:01:00Z,26,0,z\n";
    let samples = parse_csv(text).unwrap();
    assert_eq!(
        samples,
        vec![
            BatterySample { ts_ms: T0, soc_pct: 50.0, voltage_v: 48.1, current_a: 10.0, temperature_c: None },
            BatterySample {
                ts_ms: T0 + 60_000,
                soc_pct: 52.5,
                voltage_v: 48.3,
                current_a: 0.0,
                temperature_c: Some(26.0)
            },
            BatterySample {
                ts_ms: T0 + 120_000,
                soc_pct: 55.0,
                voltage_v: 48.5,
                current_a: -3.0,
                temperature_c: Some(25.5)
            },
        ]
    );
}

#[test]
fn accepts_every_documented_synonym() {
    let groups: [&[&str]; 5] = [
        &["timestamp", "ts", "time", "datetime", "date"],
        &["soc", "soc_pct", "soc_percent", "state_of_charge", "state of charge", "soc (%)"],
        &["voltage", "voltage_v", "volts", "v"],
        &["current", "current_a", "amps", "i"],
        &["temperature", "temperature_c", "temp", "temp_c"],
    ];
    for (field, names) in groups.iter().enumerate() {
        for &name in *names {
            let mut headers = ["ts", "soc", "v", "i", "temp"];
            headers[field] = name;
            let text = format!("{}\n2024-05-01 12:00:00,50,48,1,20\n", headers.join(",").to_uppercase());
            let samples = parse_csv(&text).unwrap_or_else(|e| panic!("{name}: {e:?}"));
            assert_eq!(samples[0].temperature_c, Some(20.0), "{name}");
            assert_eq!(samples[0].ts_ms, T0, "{name}");
        }
    }
}

#[test]
fn temperature_column_is_optional() {
    let samples = parse_csv("ts,soc,v,i\n1714564800,50,48,1\n").unwrap();
    assert_eq!(samples, vec![sample(T0, 50.0, 48.0, 1.0)]);
}

#[test]
fn all_timestamp_formats() {
    let cases = [
        ("2024-05-01T12:00:00Z", T0),
        ("2024-05-01T14:00:00+02:00", T0),
        ("2024-05-01T07:30:00.250-04:30", T0 + 250),
        ("2024-05-01 12:00:00", T0),
        ("2024-05-01T12:00:00", T0),
        ("2024-05-01 12:00:00.5", T0 + 500),
        ("1714564800", T0),
        ("1714564800123", T0 + 123),
    ];
    for (raw, expected) in cases {
        let text = format!("timestamp,soc,voltage,current\n{raw},50,48,1\n");
        let samples = parse_csv(&text).unwrap_or_else(|e| panic!("{raw}: {e:?}"));
        assert_eq!(samples[0].ts_ms, expected, "{raw}");
    }
    for bad in ["171456480", "17145648001", "2024-05-01", "12:00:00", "yesterday", "2024-13-01 12:00:00"] {
        let error = one_error(&format!("Time,soc,voltage,current\n{bad},50,48,1\n"));
        assert_eq!((error.line, error.column.as_deref()), (2, Some("Time")), "{bad}");
    }
}

#[test]
fn separate_date_and_time_columns_are_joined() {
    let samples = parse_csv("Date,Time,soc,v,i\n2024-05-01,12:00:00,50,48,1\n").unwrap();
    assert_eq!(samples[0].ts_ms, T0);
    let error = one_error("Date,Time,soc,v,i\n2024-05-01,noon,50,48,1\n");
    assert_eq!((error.line, error.column.as_deref()), (2, Some("Date+Time")));
}

#[test]
fn each_bad_value_names_line_and_column() {
    let header = "ts,SoC %,Volts,Amps,Temp\n";
    let good = "1714564800,50,48,1,20\n";
    let cases = [
        ("1714564801,101,48,1,20", "SoC %"),
        ("1714564801,-0.1,48,1,20", "SoC %"),
        ("1714564801,abc,48,1,20", "SoC %"),
        ("1714564801,NaN,48,1,20", "SoC %"),
        ("1714564801,,48,1,20", "SoC %"),
        ("1714564801,50,0,1,20", "Volts"),
        ("1714564801,50,2000.5,1,20", "Volts"),
        ("1714564801,50,inf,1,20", "Volts"),
        ("1714564801,50,48,10000.1,20", "Amps"),
        ("1714564801,50,48,-10001,20", "Amps"),
        ("1714564801,50,48,x,20", "Amps"),
        ("1714564801,50,48,1,150.1", "Temp"),
        ("1714564801,50,48,1,-61", "Temp"),
        ("1714564801,50,48,1,hot", "Temp"),
        ("nope,50,48,1,20", "ts"),
        ("1714564801,50,48", "Amps"),
    ];
    for (row, column) in cases {
        let error = one_error(&format!("{header}{good}{good_2}{row}\n", good_2 = "1714564802,50,48,1,20\n"));
        assert_eq!((error.line, error.column.as_deref()), (4, Some(column)), "{row}: {error}");
    }
    // Boundaries are accepted.
    parse_csv(&format!("{header}1714564800,0,2000,-10000,-60\n1714564801,100,0.01,10000,150\n")).unwrap();
}

#[test]
fn several_errors_in_one_row_and_across_rows_are_all_reported() {
    let errors = parse_csv("ts,soc,v,i\n1714564800,500,-1,1\n1714564801,50,48,1\nbad,50,48,1\n").unwrap_err();
    let got: Vec<_> = errors.iter().map(|e| (e.line, e.column.as_deref().unwrap_or(""))).collect();
    assert_eq!(got, vec![(2, "soc"), (2, "v"), (4, "ts")]);
}

#[test]
fn stops_after_twenty_errors() {
    let mut text = String::from("ts,soc,v,i\n");
    for n in 0..100 {
        text.push_str(&format!("{},200,48,1\n", 1_714_564_800 + n));
    }
    let errors = parse_csv(&text).unwrap_err();
    assert_eq!(errors.len(), MAX_ERRORS);
    assert_eq!(errors.last().unwrap().line, 21);
}

#[test]
fn missing_required_columns_are_named() {
    let errors = parse_csv("ts,soc,temp\n1714564800,50,20\n").unwrap_err();
    let got: Vec<_> = errors.iter().map(|e| (e.line, e.column.clone().unwrap())).collect();
    assert_eq!(got, vec![(1, "voltage".to_owned()), (1, "current".to_owned())]);
    assert!(errors[0].message.contains("voltage"), "{}", errors[0].message);
    let error = one_error("when,soc,v,i\n1714564800,50,48,1\n");
    assert_eq!((error.line, error.column.as_deref()), (1, Some("timestamp")));
}

#[test]
fn two_columns_for_one_field_is_an_error() {
    let error = one_error("ts,soc,voltage,v,i\n1714564800,50,48,48,1\n");
    assert_eq!((error.line, error.column.as_deref()), (1, Some("v")));
}

#[test]
fn duplicate_timestamp_names_the_later_line() {
    let text = "ts,soc,v,i\n2024-05-01T12:00:00Z,50,48,1\n1714564860,51,48,1\n2024-05-01T14:00:00+02:00,52,48,1\n";
    let error = one_error(text);
    assert_eq!((error.line, error.column.as_deref()), (4, Some("ts")));
    assert!(error.message.contains("line 2"), "{}", error.message);
}

#[test]
fn empty_and_header_only_files_are_errors() {
    for text in ["", "  \n\n", "\u{feff}"] {
        assert_eq!(one_error(text).line, 1);
    }
    let error = one_error("ts,soc,v,i\n");
    assert_eq!((error.line, error.column), (1, None));
    let error = one_error("ts,soc,v,i\n,,,\n\n");
    assert_eq!(error.line, 1);
}

#[test]
fn row_limit() {
    let mut text = String::from("ts,soc,v,i\n");
    for n in 0..=MAX_ROWS as i64 {
        text.push_str(&(T0 + n).to_string());
        text.push_str(",50,48,1\n");
    }
    let error = one_error(&text);
    assert_eq!(error.line, MAX_ROWS + 2);
    assert!(error.message.contains("too many rows"));
    // Exactly MAX_ROWS is fine.
    let cut = text.trim_end().rfind('\n').unwrap();
    assert_eq!(parse_csv(&text[..cut]).unwrap().len(), MAX_ROWS);
}

#[test]
fn extra_fields_semicolons_bom_and_blank_lines() {
    let error = one_error("ts,soc,v,i\n1714564800,50,48,1,surprise\n");
    assert_eq!((error.line, error.column), (2, None));
    parse_csv("ts,soc,v,i\n1714564800,50,48,1,\n").unwrap();
    let samples = parse_csv("\u{feff}ts;soc;v;i\r\n1714564800;50;48;1\r\n\r\n1714564801;51;48;1\r\n").unwrap();
    assert_eq!(samples.len(), 2);
    let error = one_error("ts,soc,v,i\n\n1714564800,50,48,1\n\nbad,50,48,1\n");
    assert_eq!(error.line, 5);
    let error = one_error("ts,soc,v,i\r\n\r\n\r\n1714564800,50,48,1\r\n\r\nbad,50,48,1\r\n");
    assert_eq!(error.line, 6);
    let error = one_error("ts,soc,v,i,note\n1714564800,50,48,1,\"two\nlines\"\n\n1714564801,50,48,x,\n");
    assert_eq!((error.line, error.column.as_deref()), (5, Some("i")));
    let error = one_error("\n\nts,soc,v\n1714564800,50,48\n");
    assert_eq!((error.line, error.column.as_deref()), (3, Some("current")));
}

#[test]
fn error_display() {
    let error = CsvError::new(3, Some("soc"), "bad");
    assert_eq!(error.to_string(), "line 3, column 'soc': bad");
    assert_eq!(CsvError::new(1, None, "empty").to_string(), "line 1: empty");
}

#[test]
fn summary_energy_in_one_hour_at_480_watts() {
    let s = summarize(&[sample(T0, 50.0, 48.0, 10.0), sample(T0 + 3_600_000, 60.0, 48.0, 10.0)]).unwrap();
    assert!(close(s.energy_in_kwh, 0.48), "{s:?}");
    assert!(close(s.energy_out_kwh, 0.0));
    assert!(close(s.soc_mean_pct, 55.0));
    assert_eq!((s.samples, s.from_ms, s.to_ms), (2, T0, T0 + 3_600_000));
    assert!(close(s.equivalent_full_cycles, 0.05));
}

#[test]
fn summary_discharge_and_sign_change() {
    let s = summarize(&[sample(T0, 50.0, 50.0, -20.0), sample(T0 + 1_800_000, 40.0, 50.0, -20.0)]).unwrap();
    assert!(close(s.energy_out_kwh, 0.5), "{s:?}");
    assert!(close(s.energy_in_kwh, 0.0));
    // +1000 W → −1000 W over one hour: half an hour each side, 0.25 kWh in and 0.25 kWh out.
    let s = summarize(&[sample(T0, 50.0, 50.0, 20.0), sample(T0 + 3_600_000, 50.0, 50.0, -20.0)]).unwrap();
    assert!(close(s.energy_in_kwh, 0.25), "{s:?}");
    assert!(close(s.energy_out_kwh, 0.25), "{s:?}");
}

#[test]
fn summary_cycles_time_below_20_and_mean() {
    let h = 3_600_000;
    let series = [
        BatterySample { temperature_c: Some(21.0), ..sample(T0, 20.0, 48.0, 0.0) },
        BatterySample { temperature_c: Some(35.5), ..sample(T0 + h, 80.0, 48.0, 0.0) },
        sample(T0 + 2 * h, 20.0, 48.0, 0.0),
    ];
    let s = summarize(&series).unwrap();
    assert!(close(s.equivalent_full_cycles, 0.6), "{s:?}");
    assert!(close(s.soc_mean_pct, 50.0));
    assert_eq!((s.soc_min_pct, s.soc_max_pct), (20.0, 80.0));
    assert_eq!(s.temperature_max_c, Some(35.5));
    assert!(close(s.seconds_below_20_pct, 0.0));

    let m = 60_000;
    let series = [
        sample(T0, 10.0, 48.0, 0.0),
        sample(T0 + 10 * m, 30.0, 48.0, 0.0),
        sample(T0 + 20 * m, 15.0, 48.0, 0.0),
        sample(T0 + 30 * m, 50.0, 48.0, 0.0),
    ];
    let s = summarize(&series).unwrap();
    assert!(close(s.seconds_below_20_pct, 1200.0), "{s:?}");
    // Trapezoids: (10+30)/2, (30+15)/2, (15+50)/2 over equal spans.
    assert!(close(s.soc_mean_pct, (20.0 + 22.5 + 32.5) / 3.0));
    assert_eq!(s.temperature_max_c, None);
}

#[test]
fn summary_skips_gaps_and_handles_single_and_unsorted() {
    assert_eq!(summarize(&[]), None);
    let one = summarize(&[sample(T0, 42.0, 48.0, 5.0)]).unwrap();
    assert_eq!((one.soc_mean_pct, one.energy_in_kwh, one.from_ms, one.to_ms), (42.0, 0.0, T0, T0));

    let gap = GAP_LIMIT_MS + 1;
    let s = summarize(&[sample(T0, 10.0, 48.0, 10.0), sample(T0 + gap, 30.0, 48.0, 10.0)]).unwrap();
    assert_eq!((s.energy_in_kwh, s.seconds_below_20_pct), (0.0, 0.0));
    assert!(close(s.soc_mean_pct, 20.0));
    assert!(close(s.equivalent_full_cycles, 0.1));

    let sorted = [sample(T0, 10.0, 48.0, 10.0), sample(T0 + 1000, 30.0, 48.0, 10.0), sample(T0 + 3000, 5.0, 1.0, 1.0)];
    let shuffled = [sorted[2].clone(), sorted[0].clone(), sorted[1].clone()];
    assert_eq!(summarize(&shuffled), summarize(&sorted));
}

#[test]
fn parse_then_summarize() {
    let samples = parse_csv("ts,soc,v,i\n2024-05-01 13:00:00,60,48,10\n2024-05-01 12:00:00,50,48,10\n").unwrap();
    let s = summarize(&samples).unwrap();
    assert!(close(s.energy_in_kwh, 0.48));
}
