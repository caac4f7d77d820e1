// The public entry of coordinator/: what cli/ may use.
export { baselineMerges, baselineParams, type NamedParams, type NamedWeights } from './baselines.js';
export { Coordinator, type CoordinatorOptions } from './coordinator.js';
export type { TransferSummary } from './worker-tracker.js';
export { StudyEvents, type StudyEvent, type StudyEventListener, type StudyPhase } from './events.js';
export { genomeSpace, proposalParams } from './genome-space.js';
export { TrialBook, type BookSettings, type Effect, type Progress, type Transition } from './trial-book.js';
export { buildReport, reportFromRecords, type StudyReport, type MergeSummary } from './report.js';
export {
  DEFAULT_STATUS_PAGE,
  MAX_STATUS_PAGE,
  STATUS_FORMAT,
  STATUS_VERSION,
  studyListSchema,
  studyStatusSchema,
  studySummary,
  statusTrial,
  weightsArg,
  type StatusRequest,
  type StudyList,
  type StudyListItem,
  type StudyStatus,
  type StudySummary,
  type StatusTrial,
  type StatusWorker,
} from './status/status.js';
export { estimateEta } from './status/eta.js';
export { StatusService, type StatusServiceOptions } from './status/status-service.js';
export { requestFullStatus, requestStudyList, requestStudyStatus, DEFAULT_STATUS_TIMEOUT_MS } from './status/status-client.js';
export { listFromStore, statusFromStore } from './status/from-store.js';
export { LiveStatus } from './status/live-status.js';
export {
  DashboardServer,
  type DashboardOptions,
  type DashboardSource,
  DEFAULT_DASHBOARD_HOST,
  DEFAULT_DASHBOARD_PORT,
} from './dashboard/server.js';
export { coordinatorSource } from './dashboard/sources.js';
export { renderHtmlReport } from './dashboard/report-html.js';
export { loadStudyConfig, parseStudyConfig, parseSamplerConfig, type StudyConfig } from './study/config.js';
export type { StudyStore } from './store/store.js';
export { isStoreInUse, openLevelStore, type OpenLevelStoreOptions } from './store/level-store.js';
export { MemoryStudyStore } from './store/memory-store.js';
export { createSampler, SAMPLER_NAMES, type SamplerSpec } from './sampler/create.js';
export type { Sampler, TrialView, Params } from './sampler/sampler.js';
export { parseSpace, type SearchSpace } from './sampler/space.js';
export { TpeSampler, DEFAULT_TPE_OPTIONS, type TpeOptions } from './sampler/tpe.js';
export { RandomSampler } from './sampler/random.js';
export { HaltonSampler } from './sampler/qmc.js';
