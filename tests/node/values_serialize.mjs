// Prints {name: hex of v8.serialize(value)} for every shared case.
import v8 from "node:v8";
import { cases } from "./values_cases.mjs";

const out = {};
for (const [name, value] of cases()) out[name] = v8.serialize(value).toString("hex");
console.log(JSON.stringify(out));
