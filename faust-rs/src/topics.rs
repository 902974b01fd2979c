//! Creating the topics an app uses: through the mock API on the embedded broker, through
//! the admin API (CreateTopics) on Kafka.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use rdkafka_async::admin::{AdminOptions, NewTopic};
use rdkafka_async::{sys, Admin, MockCluster};

use crate::app::App;
use crate::error::{Error, Result};

/// How long asking the cluster which topics exist may take.
const METADATA_TIMEOUT: Duration = Duration::from_secs(10);

/// Where topics are created.
pub(crate) enum Cluster {
    Embedded(Arc<MockCluster>),
    Kafka(Admin),
}

/// Creates the app's topics once each.
pub(crate) struct TopicCreator {
    cluster: Cluster,
    /// Asks for metadata (partition counts), whatever the cluster.
    metadata: Admin,
    app: App,
    created: BTreeSet<String>,
}

impl TopicCreator {
    pub(crate) fn new(cluster: Cluster, metadata: Admin, app: App) -> Self {
        Self {
            cluster,
            metadata,
            app,
            created: BTreeSet::new(),
        }
    }

    /// Creates the topics among `names` not created yet (existing ones are left alone),
    /// with their declared partition count (or the app's default).
    pub(crate) async fn ensure<'a>(
        &mut self,
        names: impl Iterator<Item = &'a String>,
    ) -> Result<()> {
        let default = self.app.settings().topic_partitions;
        let declared = self.app.topics();
        let todo: Vec<(String, i32)> = names
            .filter(|n| !self.created.contains(*n))
            .map(|n| {
                let partitions = declared
                    .iter()
                    .find(|s| &s.name == n)
                    .and_then(|s| s.partitions)
                    .unwrap_or(default);
                (n.clone(), partitions)
            })
            .collect();
        if todo.is_empty() {
            return Ok(());
        }
        match &self.cluster {
            Cluster::Embedded(cluster) => {
                for (name, partitions) in &todo {
                    match cluster.create_topic(name, *partitions, 1) {
                        Ok(()) => tracing::debug!(topic = %name, partitions, "created topic"),
                        Err(err) if is_exists(&err) => {}
                        Err(err) => return Err(err.into()),
                    }
                }
            }
            Cluster::Kafka(admin) => {
                // Only create what the cluster lacks: a cluster without CreateTopics (the
                // mock cluster of `faust broker`, or one the app may not administer) then
                // works with topics made beforehand.
                let existing: BTreeSet<String> = match admin.metadata(None, METADATA_TIMEOUT).await
                {
                    Ok(md) => md
                        .topics
                        .into_iter()
                        .filter(|t| t.error.is_none() && !t.partitions.is_empty())
                        .map(|t| t.name)
                        .collect(),
                    Err(err) => {
                        tracing::debug!(%err, "no metadata; creating every topic");
                        BTreeSet::new()
                    }
                };
                let new: Vec<NewTopic> = todo
                    .iter()
                    .filter(|(name, _)| !existing.contains(name))
                    .map(|(name, p)| {
                        let topic = NewTopic::new(name, *p);
                        // Table changelogs and the cluster map keep the last record per key.
                        if name.ends_with("-changelog") || name.ends_with("-__cluster") {
                            topic.config("cleanup.policy", "compact")
                        } else {
                            topic
                        }
                    })
                    .collect();
                if new.is_empty() {
                    self.created.extend(todo.into_iter().map(|(n, _)| n));
                    return Ok(());
                }
                for result in admin.create_topics(&new, &AdminOptions::default()).await? {
                    match result.result {
                        Ok(()) => tracing::info!(topic = %result.name, "created topic"),
                        Err(err) if is_exists(&err) => {}
                        Err(err) => {
                            return Err(Error::Lifecycle(format!(
                                "could not create topic {}: {err}",
                                result.name
                            )))
                        }
                    }
                }
            }
        }
        self.created.extend(todo.into_iter().map(|(n, _)| n));
        Ok(())
    }
}

impl TopicCreator {
    /// The partition counts of `names` (topics the cluster does not know are left out).
    pub(crate) async fn partition_counts(
        &self,
        names: impl Iterator<Item = &String>,
    ) -> Result<std::collections::HashMap<String, i32>> {
        let wanted: BTreeSet<&String> = names.collect();
        let md = self.metadata.metadata(None, METADATA_TIMEOUT).await?;
        Ok(md
            .topics
            .into_iter()
            .filter(|t| wanted.contains(&t.name) && t.error.is_none() && !t.partitions.is_empty())
            .map(|t| {
                let n = t.partitions.len() as i32;
                (t.name, n)
            })
            .collect())
    }
}

fn is_exists(err: &rdkafka_async::Error) -> bool {
    err.code().is_some_and(|c| {
        c.raw() == sys::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_TOPIC_ALREADY_EXISTS
    })
}
