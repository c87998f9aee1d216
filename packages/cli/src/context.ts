import { EventVerifier, NodeKeyDirectory, StateStore, createAwsClients, destroyAwsClients, ensureTopic, type AwsClients } from "@bosun/aws";
import { ConfigError, TrustStore, createLogger, loadSettings, loadSigner, type Logger, type Settings, type Signer } from "@bosun/core";

export interface GlobalOptions {
  config?: string;
}

export interface Context {
  settings: Settings & { configFile?: string };
  clients: AwsClients;
  logger: Logger;
  trust(): TrustStore;
  signer(): Signer;
  topicArn(): Promise<string>;
  verifier(): Promise<EventVerifier>;
  close(): void;
}

/**
 * Settings, AWS clients and a logger for one CLI run. Settings are validated here, once.
 * A dev fleet's config names its local endpoint; it stands in for AWS_ENDPOINT_URL when that is unset.
 */
export function createContext(global: GlobalOptions, overrides: Partial<Record<keyof Settings, unknown>> = {}, log: { name: string; stream?: "stdout" | "stderr" } = { name: "cli" }): Context {
  const settings = loadSettings({ file: global.config, overrides });
  if (settings.devEndpoint && !process.env["AWS_ENDPOINT_URL"]) {
    process.env["AWS_ENDPOINT_URL"] = settings.devEndpoint;
    process.env["AWS_REGION"] ??= "us-east-1";
    // The emulator accepts any credentials; these never reach AWS.
    process.env["AWS_ACCESS_KEY_ID"] ??= "bosun-dev";
    process.env["AWS_SECRET_ACCESS_KEY"] ??= "bosun-dev";
  }
  const clients = createAwsClients();
  const logger = createLogger(
    { level: settings.logLevel, name: log.name },
    log.stream === "stderr" ? process.stderr : undefined,
  );
  let trust: TrustStore | undefined;
  let signer: Signer | undefined;
  let topic: Promise<string> | undefined;
  let verifier: Promise<EventVerifier> | undefined;
  return {
    settings,
    clients,
    logger,
    trust: () => (trust ??= TrustStore.load(settings.trustFile)),
    signer: () => {
      if (!settings.keyId || !settings.signingKey) {
        throw new ConfigError(
          `Signing needs a key: set keyId and signingKey (BOSUN_KEY_ID and BOSUN_SIGNING_KEY), received keyId=${JSON.stringify(settings.keyId)} signingKey=${JSON.stringify(settings.signingKey)}`,
        );
      }
      return (signer ??= loadSigner(settings.keyId, settings.signingKey));
    },
    topicArn: () => (topic ??= ensureTopic(clients, settings.cluster)),
    verifier: () =>
      (verifier ??= (async () => {
        const store = new StateStore({ clients }, { bucket: settings.bucket });
        const keys = new NodeKeyDirectory({ store }, { topicArn: await (topic ??= ensureTopic(clients, settings.cluster)) });
        return new EventVerifier({ trust: (trust ??= TrustStore.load(settings.trustFile)), keys }, { maxBytes: settings.maxMessageBytes });
      })()),
    close: () => destroyAwsClients(clients),
  };
}
