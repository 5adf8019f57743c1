import { buildEmbeddedGateway } from './embedded-gateway';
import { serveOnThisThread } from './service-thread';

// The entry of the ws-gateway's thread (embeddedGatewayOnThread).
serveOnThisThread('ws-gateway', buildEmbeddedGateway);
