#![doc = include_str!("../README.md")]

pub mod cli;
pub mod error;
pub mod expect;
pub mod har;
pub mod identity;
pub mod openapi;
pub mod operation;
pub mod report;
pub mod rules;
pub mod run;

use std::time::Instant;

use crate::error::AuditError;
use crate::expect::Expectations;
use crate::identity::Identity;
use crate::operation::Operation;
use crate::report::{AuditReport, Row};
use crate::run::{Limits, Purpose};

/// One audit: what to ask, whom to ask as, what to expect, within which limits.
#[derive(Debug, Clone)]
pub struct Audit {
    /// The base URL operations' paths are appended to.
    pub base: reqwest::Url,
    /// The operations.
    pub operations: Vec<Operation>,
    /// The identities, in column order.
    pub identities: Vec<Identity>,
    /// The expectations (empty: only the rules that need none).
    pub expectations: Expectations,
    /// The safety limits.
    pub limits: Limits,
}

impl Audit {
    /// Plan, send, judge.
    ///
    /// # Errors
    /// An [`AuditError`] when the plan breaks a limit or the target is unreachable.
    pub async fn run(&self) -> Result<AuditReport, AuditError> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let plan = run::plan(
            &self.base,
            &self.operations,
            &self.identities,
            &self.expectations,
            &self.limits,
        )?;
        let started = Instant::now();
        let sent = run::send(
            &plan.probes,
            &self.operations,
            &self.identities,
            &self.limits,
        )
        .await?;
        let exchanges = sent.exchanges;
        let elapsed_ms = started.elapsed().as_millis();
        let findings = rules::matrix::judge(
            &self.operations,
            &self.identities,
            &self.expectations,
            &exchanges,
        );
        let matrix = self
            .operations
            .iter()
            .enumerate()
            .filter(|(o, _)| exchanges.iter().any(|x| x.probe.op == *o))
            .map(|(o, op)| Row {
                operation: op.id.clone(),
                method: op.method.to_string(),
                path: op.path.clone(),
                cells: (0..self.identities.len())
                    .map(|i| {
                        exchanges
                            .iter()
                            .find(|x| {
                                x.probe.op == o
                                    && x.probe.identity == i
                                    && x.probe.purpose == Purpose::Main
                            })
                            .map(|x| x.answer.status.as_u16())
                    })
                    .collect(),
            })
            .collect();
        Ok(AuditReport {
            base: self.base.to_string(),
            identities: self.identities.iter().map(|i| i.name.clone()).collect(),
            matrix,
            findings,
            skipped: plan
                .skipped
                .into_iter()
                .chain(sent.timed_out.iter().cloned())
                .collect(),
            requests: exchanges.len() + sent.timed_out.len(),
            elapsed_ms,
        })
    }
}
