//! The agent and health endpoints of the [`Client`]: services, TTL checks, healthy instances.

use super::*;

impl Client {
    // === agent ===

    /// `PUT /v1/agent/service/register`.
    pub async fn agent_service_register(
        &self,
        reg: &ServiceRegistration,
    ) -> Result<(), ConsulError> {
        let rb = self
            .request(
                Method::PUT,
                self.url(&["v1", "agent", "service", "register"], None),
                None,
            )
            .json(reg);
        Self::expect_ok(Self::send(rb).await?).await.map(drop)
    }

    /// `PUT /v1/agent/service/deregister/<id>` (a no-op for an unknown id).
    pub async fn agent_service_deregister(&self, id: &str) -> Result<(), ConsulError> {
        let url = self.url(&["v1", "agent", "service", "deregister", id], None);
        Self::expect_ok(Self::send(self.request(Method::PUT, url, None)).await?)
            .await
            .map(drop)
    }

    /// `PUT /v1/agent/check/{pass|warn|fail}/<id>[?note=]`: updates a TTL check.
    pub async fn agent_check_update(
        &self,
        check_id: &str,
        status: CheckStatus,
        note: Option<&str>,
    ) -> Result<(), ConsulError> {
        let verb = match status {
            CheckStatus::Passing => "pass",
            CheckStatus::Warning => "warn",
            CheckStatus::Critical | CheckStatus::Unknown => "fail",
        };
        let mut url = self.url(&["v1", "agent", "check", verb, check_id], None);
        if let Some(n) = note {
            url.query_pairs_mut().append_pair("note", n);
        }
        Self::expect_ok(Self::send(self.request(Method::PUT, url, None)).await?)
            .await
            .map(drop)
    }

    /// `PUT /v1/agent/check/pass/<id>`.
    pub async fn agent_check_pass(
        &self,
        check_id: &str,
        note: Option<&str>,
    ) -> Result<(), ConsulError> {
        self.agent_check_update(check_id, CheckStatus::Passing, note)
            .await
    }

    /// `PUT /v1/agent/check/warn/<id>`.
    pub async fn agent_check_warn(
        &self,
        check_id: &str,
        note: Option<&str>,
    ) -> Result<(), ConsulError> {
        self.agent_check_update(check_id, CheckStatus::Warning, note)
            .await
    }

    /// `PUT /v1/agent/check/fail/<id>`.
    pub async fn agent_check_fail(
        &self,
        check_id: &str,
        note: Option<&str>,
    ) -> Result<(), ConsulError> {
        self.agent_check_update(check_id, CheckStatus::Critical, note)
            .await
    }

    /// `GET /v1/agent/services`: the services registered on this agent, by id.
    pub async fn agent_services(&self) -> Result<AgentServices, ConsulError> {
        let url = self.url(&["v1", "agent", "services"], None);
        let resp = Self::expect_ok(Self::send(self.request(Method::GET, url, None)).await?).await?;
        let map: Option<AgentServices> = Self::json(resp, "agent services").await?;
        Ok(map.unwrap_or_default())
    }

    // === health ===

    /// `GET /v1/health/service/<name>` with `passing`, `tag`, `filter` and blocking options.
    pub async fn health_service(
        &self,
        name: &str,
        hq: &HealthQuery,
        q: &QueryOptions,
    ) -> Result<(Vec<HealthEntry>, QueryMeta), ConsulError> {
        if name.is_empty() || name.contains('/') || name.chars().any(char::is_control) {
            return Err(ConsulError::InvalidRequest(format!(
                "bad service name {name:?}"
            )));
        }
        let mut url = self.url(&["v1", "health", "service", name], None);
        {
            let mut p = url.query_pairs_mut();
            if hq.passing {
                append_flag(&mut p, "passing");
            }
            for t in &hq.tags {
                p.append_pair("tag", t);
            }
            if let Some(f) = &hq.filter {
                p.append_pair("filter", f);
            }
        }
        let resp =
            Self::expect_ok(Self::send(self.request(Method::GET, url, Some(q))).await?).await?;
        let meta = Self::meta(&resp);
        let list: Option<Vec<HealthEntry>> = Self::json(resp, "health service").await?;
        Ok((list.unwrap_or_default(), meta))
    }
}
