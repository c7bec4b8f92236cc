/**
 * Certificates for the TLS tests, made with openssl in a temporary directory: a CA, two server
 * certificates for 127.0.0.1 and localhost (to rotate from one to the other), and a client
 * certificate, all signed by the CA.
 */
import { execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";

export interface Certificates {
  dir: string;
  ca: Buffer;
  /** Paths of the PEM files. */
  caFile: string;
  servers: Array<{ certFile: string; keyFile: string; serial: string }>;
  client: { cert: Buffer; key: Buffer; certFile: string; keyFile: string };
  remove(): void;
}

export function makeCertificates(): Certificates {
  const dir = mkdtempSync(path.join(tmpdir(), "glance-tls-"));
  const file = (name: string) => path.join(dir, name);
  const openssl = (...args: string[]) => execFileSync("openssl", args, { cwd: dir, stdio: ["ignore", "pipe", "pipe"] });
  openssl(
    "req",
    "-x509",
    "-newkey",
    "rsa:2048",
    "-nodes",
    "-days",
    "2",
    "-subj",
    "/CN=Glance test CA",
    "-keyout",
    "ca.key",
    "-out",
    "ca.pem",
  );
  const sign = (name: string, subject: string, extensions: string, serial: string) => {
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", subject, "-keyout", `${name}.key`, "-out", `${name}.csr`);
    const ext = file(`${name}.ext`);
    execFileSync("sh", ["-c", `printf '%s\\n' "${extensions}" > ${ext}`]);
    openssl(
      "x509",
      "-req",
      "-in",
      `${name}.csr`,
      "-CA",
      "ca.pem",
      "-CAkey",
      "ca.key",
      "-set_serial",
      serial,
      "-days",
      "2",
      "-extfile",
      ext,
      "-out",
      `${name}.pem`,
    );
  };
  const serverExt = "subjectAltName=IP:127.0.0.1,DNS:localhost";
  sign("server1", "/CN=localhost", serverExt, "0x1001");
  sign("server2", "/CN=localhost", serverExt, "0x1002");
  sign("client", "/CN=glance-test-client", "extendedKeyUsage=clientAuth", "0x2001");
  return {
    dir,
    ca: readFileSync(file("ca.pem")),
    caFile: file("ca.pem"),
    servers: [
      { certFile: file("server1.pem"), keyFile: file("server1.key"), serial: "1001" },
      { certFile: file("server2.pem"), keyFile: file("server2.key"), serial: "1002" },
    ],
    client: {
      cert: readFileSync(file("client.pem")),
      key: readFileSync(file("client.key")),
      certFile: file("client.pem"),
      keyFile: file("client.key"),
    },
    remove: () => rmSync(dir, { recursive: true, force: true }),
  };
}
