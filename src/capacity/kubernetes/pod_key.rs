//! The serve pods' API key: a random key per booking in a Secret the runner creates owned
//! by the pods' Job, so the collector deletes it with the Job and the runner needs no right
//! to list or read Secrets; the pods read it into `GEMBATCH_API_KEY`.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{EnvVar, EnvVarSource, Secret, SecretKeySelector};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::Client;
use kube::api::{Api, DeleteParams, PostParams};

use super::KubeError;
use super::objects::ReservePlan;

/// The field of the API key in its Secret.
const API_KEY_FIELD: &str = "api-key";

impl ReservePlan {
    /// The Secret holding the pods' API key (one per booking, as the Job is).
    pub fn key_secret_name(&self) -> String {
        format!("{}-key", self.base_name())
    }

    /// The Secret holding `key`, owned by the pods' Job `owner`.
    pub fn key_secret(&self, key: &str, owner: OwnerReference) -> Secret {
        let mut metadata = self.meta(self.key_secret_name());
        metadata.owner_references = Some(vec![owner]);
        Secret {
            metadata,
            string_data: Some(BTreeMap::from([(
                API_KEY_FIELD.to_string(),
                key.to_string(),
            )])),
            ..Secret::default()
        }
    }

    /// The serve container's `GEMBATCH_API_KEY`, read from the key's Secret.
    pub fn key_env(&self) -> EnvVar {
        EnvVar {
            name: "GEMBATCH_API_KEY".into(),
            value_from: Some(EnvVarSource {
                secret_key_ref: Some(SecretKeySelector {
                    name: self.key_secret_name(),
                    key: API_KEY_FIELD.into(),
                    optional: Some(false),
                }),
                ..EnvVarSource::default()
            }),
            ..EnvVar::default()
        }
    }
}

/// A new random API key for a run's pods: 256 bits, as hex.
pub fn new_api_key() -> String {
    use rand::Rng;
    let bytes: [u8; 32] = rand::rng().random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Creates the Secret holding the pods' API key, owned by their Job. One a killed attempt
/// left under its name (not yet collected with that attempt's Job) is replaced.
pub async fn create_key_secret(
    client: &Client,
    plan: &ReservePlan,
    api_key: &str,
    job_owner: &OwnerReference,
) -> Result<(), KubeError> {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &plan.namespace);
    let secret = plan.key_secret(api_key, job_owner.clone());
    let create = KubeError::api("create the pods' API key Secret");
    match secrets.create(&PostParams::default(), &secret).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.code == 409 => {
            let _ = secrets
                .delete(&plan.key_secret_name(), &DeleteParams::default())
                .await;
            secrets
                .create(&PostParams::default(), &secret)
                .await
                .map(|_| ())
                .map_err(&create)
        }
        Err(err) => Err(create(err)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_random_256_bit_hex_and_the_pods_read_theirs() {
        let (one, two) = (new_api_key(), new_api_key());
        assert_eq!(one.len(), 64);
        assert!(one.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_ne!(one, two);
        let plan = crate::capacity::kubernetes::objects::tests::plan();
        let reference = plan.key_env().value_from.unwrap().secret_key_ref.unwrap();
        assert_eq!(reference.name, plan.key_secret_name());
        let secret = plan.key_secret(&one, OwnerReference::default());
        assert_eq!(secret.string_data.unwrap()[&reference.key], one);
    }
}
