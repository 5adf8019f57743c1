/** @expectedSeconds 90 */
import { kafkaSuite } from './support/kafka-suite';
import { embeddedTarget } from './support/targets';

kafkaSuite('libs/kafka against the embedded broker', embeddedTarget);
