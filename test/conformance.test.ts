import { replayConformance } from './conformance.js';

replayConformance('conformance with the reference HTTPSQS 1.7');
