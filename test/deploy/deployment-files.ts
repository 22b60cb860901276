import { readFileSync } from "node:fs";
import { resolve } from "node:path";
import { parse, parseAllDocuments } from "yaml";

export const ROOT = resolve(import.meta.dirname, "../..");
export const K8S_DIR = resolve(ROOT, "infra/k8s");
export const COMPOSE_FILE = resolve(ROOT, "infra/compose/docker-compose.yml");
/** The image every loraplane process runs, as the manifests name it before kustomize's rewrite. */
export const LORAPLANE_IMAGE = "loraplane";

export interface K8sObject {
  apiVersion: string;
  kind: string;
  metadata: { name: string; namespace?: string; labels?: Record<string, string> };
  [key: string]: unknown;
}

export interface Container {
  name: string;
  image: string;
  args?: string[];
  command?: string[];
  ports?: { name?: string; containerPort: number }[];
  env?: {
    name: string;
    value?: string;
    valueFrom?: {
      configMapKeyRef?: { name: string; key: string };
      secretKeyRef?: { name: string; key: string; optional?: boolean };
      fieldRef?: { fieldPath: string };
    };
  }[];
  envFrom?: { configMapRef?: { name: string }; secretRef?: { name: string } }[];
  volumeMounts?: { name: string; mountPath: string; readOnly?: boolean }[];
  livenessProbe?: Probe;
  readinessProbe?: Probe;
  startupProbe?: Probe;
  resources?: { requests?: Record<string, string>; limits?: Record<string, string> };
}

export interface Probe {
  httpGet?: { path: string; port: string | number };
  exec?: { command: string[] };
}

export interface PodTemplate {
  metadata: { labels: Record<string, string> };
  spec: {
    containers: Container[];
    volumes?: { name: string; configMap?: { name: string }; emptyDir?: unknown }[];
  };
}

export interface Kustomization {
  namespace: string;
  resources: string[];
  images: { name: string; newName?: string; newTag?: string }[];
}

export function readKustomization(): Kustomization {
  return parse(readFileSync(resolve(K8S_DIR, "kustomization.yaml"), "utf8")) as Kustomization;
}

/** The objects of one manifest file in infra/k8s, as written. */
export function readObjects(file: string): K8sObject[] {
  return parseAllDocuments(readFileSync(resolve(K8S_DIR, file), "utf8"))
    .map((doc) => {
      if (doc.errors.length > 0) {
        throw new Error(`${file}: ${doc.errors.map((e) => e.message).join("; ")}`);
      }
      return doc.toJS() as K8sObject | null;
    })
    .filter((o): o is K8sObject => o !== null);
}

/** Every object the kustomization applies, as written (names and images before kustomize rewrites them). */
export function loadK8sObjects(): K8sObject[] {
  return readKustomization().resources.flatMap(readObjects);
}

/** The Secrets an operator creates by hand (documented in secret.example.yaml, never applied). */
export function loadExampleSecrets(): K8sObject[] {
  return readObjects("secret.example.yaml");
}

export function podTemplate(object: K8sObject): PodTemplate | null {
  if (object.kind === "Deployment" || object.kind === "StatefulSet") {
    return (object.spec as { template: PodTemplate }).template;
  }
  return null;
}

export function loraplaneContainers(objects: K8sObject[]): { owner: K8sObject; container: Container }[] {
  return objects.flatMap((owner) =>
    (podTemplate(owner)?.spec.containers ?? [])
      .filter((container) => container.image === LORAPLANE_IMAGE)
      .map((container) => ({ owner, container })),
  );
}

export interface ComposeService {
  image?: string;
  build?: unknown;
  command?: string[];
  environment?: Record<string, string>;
  profiles?: string[];
  depends_on?: Record<string, { condition: string }>;
  volumes?: string[];
  networks?: string[];
  ports?: string[];
  deploy?: {
    replicas?: number;
    resources?: { reservations?: { devices?: { driver: string; capabilities: string[] }[] } };
  };
  healthcheck?: unknown;
}

export interface ComposeFile {
  name: string;
  services: Record<string, ComposeService>;
  volumes: Record<string, unknown>;
  networks: Record<string, unknown>;
}

/** The compose file with its YAML anchors and `<<` merge keys resolved, as docker compose reads it. */
export function loadCompose(): ComposeFile {
  return parse(readFileSync(COMPOSE_FILE, "utf8"), { merge: true }) as ComposeFile;
}

/** Services that run the loraplane image (api, scheduler, metering, agents, simulators, migrate). */
export function loraplaneServices(compose: ComposeFile): [string, ComposeService][] {
  return Object.entries(compose.services).filter(([, s]) => s.build !== undefined);
}
