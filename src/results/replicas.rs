//! `replicas.parquet` of a load run with `--watch-deployment`: the watched Deployment's
//! replica counts and its autoscaler's wishes over time, one row per sample.

use std::path::Path;

use super::origin::RunOrigin;
use super::table::{Cell, Column, Kind, Table, TableError, with_run_id, write_all};

/// The file's name in a run's directory.
pub const REPLICAS_FILE: &str = "replicas.parquet";

/// One look at the Deployment and its HorizontalPodAutoscaler.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ReplicaSample {
    /// Seconds from the run's start.
    pub t_s: f64,
    /// `spec.replicas`: what the Deployment asks for.
    pub spec_replicas: Option<u32>,
    /// `status.replicas`: pods that exist.
    pub replicas: Option<u32>,
    /// `status.readyReplicas`: pods that are ready.
    pub ready_replicas: Option<u32>,
    /// The autoscaler's `status.currentReplicas`, if one targets the Deployment.
    pub hpa_current: Option<u32>,
    /// The autoscaler's `status.desiredReplicas`.
    pub hpa_desired: Option<u32>,
}

fn columns(origin: &RunOrigin) -> Vec<Column<ReplicaSample>> {
    type S = ReplicaSample;
    let t0 = origin.unix_s();
    let columns = vec![
        Column::new("t_s", Kind::F64, |s: &S| Cell::F64(Some(s.t_s))),
        Column::new("at", Kind::Time, move |s: &S| {
            Cell::unix_seconds(Some(t0 + s.t_s))
        }),
        Column::new("spec_replicas", Kind::I64, |s: &S| {
            Cell::int(s.spec_replicas)
        }),
        Column::new("replicas", Kind::I64, |s: &S| Cell::int(s.replicas)),
        Column::new("ready_replicas", Kind::I64, |s: &S| {
            Cell::int(s.ready_replicas)
        }),
        Column::new("hpa_current", Kind::I64, |s: &S| Cell::int(s.hpa_current)),
        Column::new("hpa_desired", Kind::I64, |s: &S| Cell::int(s.hpa_desired)),
    ];
    with_run_id(&origin.run_id, columns)
}

/// Writes `dir/replicas.parquet`.
pub fn write_replicas(
    dir: &Path,
    origin: &RunOrigin,
    samples: &[ReplicaSample],
) -> Result<(), parquet::errors::ParquetError> {
    let path = dir.join(REPLICAS_FILE);
    write_all(&path, columns(origin), samples.iter().cloned())
}

/// Reads `dir/replicas.parquet` back; `None` when the run watched no Deployment.
pub fn read_replicas(dir: &Path) -> Result<Option<Vec<ReplicaSample>>, TableError> {
    let path = dir.join(REPLICAS_FILE);
    if !path.exists() {
        return Ok(None);
    }
    let table = Table::read(&path)?;
    let t = table.f64s("t_s")?;
    let [spec, replicas, ready, current, desired] = [
        "spec_replicas",
        "replicas",
        "ready_replicas",
        "hpa_current",
        "hpa_desired",
    ]
    .map(|name| table.u32s(name));
    let (spec, replicas, ready, current, desired) = (spec?, replicas?, ready?, current?, desired?);
    Ok(Some(
        (0..t.len())
            .map(|i| ReplicaSample {
                t_s: t[i].unwrap_or(0.0),
                spec_replicas: spec[i],
                replicas: replicas[i],
                ready_replicas: ready[i],
                hpa_current: current[i],
                hpa_desired: desired[i],
            })
            .collect(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_round_trip_with_their_gaps() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(read_replicas(dir.path()).unwrap(), None);
        let samples = vec![
            ReplicaSample {
                t_s: 0.0,
                spec_replicas: Some(1),
                replicas: Some(1),
                ready_replicas: Some(0),
                hpa_current: Some(1),
                hpa_desired: Some(3),
            },
            // The API did not answer: a gap, not zeros.
            ReplicaSample {
                t_s: 5.0,
                ..ReplicaSample::default()
            },
        ];
        write_replicas(dir.path(), &RunOrigin::now("r"), &samples).unwrap();
        assert_eq!(read_replicas(dir.path()).unwrap(), Some(samples));
    }
}
