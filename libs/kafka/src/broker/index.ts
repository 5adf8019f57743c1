export { startBroker } from './broker';
export type { Broker, BrokerOptions } from './broker';
export type { FsyncPolicy } from './log/partition-log';
