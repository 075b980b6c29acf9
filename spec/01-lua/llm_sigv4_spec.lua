-- spec/01-lua/llm_sigv4_spec.lua -- SHA-256 / HMAC (pure Lua fallback) and SigV4 known answers
-- luacheck: max line length 160
local sha = require "lunagate.llm.sha256"
local sigv4 = require "lunagate.llm.sigv4"

local SECRET = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"

describe("lunagate.llm.sha256", function()
    it("matches the FIPS 180-2 test vectors", function()
        assert.equal("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855", sha.hex(sha.sha256("")))
        assert.equal("ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad", sha.hex(sha.sha256("abc")))
        assert.equal("248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1",
            sha.hex(sha.sha256("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq")))
        assert.equal("41edece42d63e8d9bf515a9ba6932e1c20cbc9f5a5d134645adb5db1b9737ea3",
            sha.hex(sha.sha256(string.rep("a", 1000))))     -- sha256sum of 1000 "a"
        -- padding edge cases (55, 56 and 64 bytes), values from sha256sum
        assert.equal("5a383411d906da80612f366cb9b90ae54bcf6e7743b4117ace0884d98cd159ca",
            sha.hex(sha.sha256(string.rep("z", 55))))
        assert.equal("c66a5b692b9a20229733ef8b87cfec52679c86a0c0245643484c46d4dcd82afa",
            sha.hex(sha.sha256(string.rep("z", 56))))
        assert.equal("72996563049cc84daa2c3f31fd5c3d10770e69d6ebbb8da5b6d76db303dbae43",
            sha.hex(sha.sha256(string.rep("z", 64))))
    end)

    it("matches the RFC 4231 HMAC-SHA-256 test cases", function()
        assert.equal("b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7",
            sha.hex(sha.hmac_sha256(string.rep("\11", 20), "Hi There")))
        assert.equal("5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843",
            sha.hex(sha.hmac_sha256("Jefe", "what do ya want for nothing?")))
        -- key longer than the block size (test case 6)
        assert.equal("60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54",
            sha.hex(sha.hmac_sha256(string.rep("\170", 131),
                "Test Using Larger Than Block-Size Key - Hash Key First")))
    end)
end)

describe("lunagate.llm.sigv4 (AWS Signature Version 4 test suite)", function()
    local base = { host = "example.amazonaws.com", path = "/", region = "us-east-1", service = "service",
                   access_key = "AKIDEXAMPLE", secret_key = SECRET, amz_date = "20150830T123600Z" }
    local function with(t)
        local r = {}
        for k, v in pairs(base) do r[k] = v end
        for k, v in pairs(t) do r[k] = v end
        return r
    end

    it("signs post-vanilla", function()
        local h, creq = sigv4.sign(with({ method = "POST" }))
        assert.equal("POST\n/\n\nhost:example.amazonaws.com\nx-amz-date:20150830T123600Z\n\nhost;x-amz-date\n"
            .. "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855", creq)
        assert.equal("AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, "
            .. "SignedHeaders=host;x-amz-date, "
            .. "Signature=5da7c1a2acd57cee7505fc6676e4e544621c30862966e37dddb68e92efbe5d6b", h.authorization)
        assert.equal("20150830T123600Z", h["x-amz-date"])
    end)

    it("signs get-vanilla-query with a value (get-vanilla-empty-query-key)", function()
        local h = sigv4.sign(with({ method = "GET", query = "Param1=value1" }))
        assert.equal("AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, "
            .. "SignedHeaders=host;x-amz-date, "
            .. "Signature=a67d582fa61cc504c4bae71f336f98b97f1ea3c7a6bfe1b6e45aec72011b9aeb", h.authorization)
    end)

    it("builds the post-vanilla-empty-query-value canonical request", function()
        local _, creq = sigv4.sign(with({ method = "POST", query = "Param1=value1" }))
        assert.equal("POST\n/\nParam1=value1\nhost:example.amazonaws.com\nx-amz-date:20150830T123600Z\n\n"
            .. "host;x-amz-date\ne3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855", creq)
    end)

    it("sorts and encodes the query, double-encodes the path, signs the session token", function()
        assert.equal("a=1&b=%20x&b=y", sigv4.canonical_query("b=y&a=1&b=%20x"))
        assert.equal("/model/a%253A0/converse", sigv4.canonical_uri("/model/a%3A0/converse"))
        local h, creq = sigv4.sign(with({ method = "POST", session_token = "tok", body = "{}" }))
        assert.matches("SignedHeaders=host;x%-amz%-date;x%-amz%-security%-token,", h.authorization)
        assert.equal("tok", h["x-amz-security-token"])
        assert.matches("\nx%-amz%-security%-token:tok\n", creq)
        assert.equal(sha.hex(sha.sha256("{}")), creq:match("([0-9a-f]+)$"))
    end)

    it("reads credentials from the standard environment variables", function()
        local env = { AWS_ACCESS_KEY_ID = "AK", AWS_SECRET_ACCESS_KEY = "SK", AWS_SESSION_TOKEN = "ST",
                      AWS_REGION = "eu-west-1" }
        local c = sigv4.from_env(function(k) return env[k] end)
        assert.same({ access_key = "AK", secret_key = "SK", session_token = "ST", region = "eu-west-1" }, c)
        local none, err = sigv4.from_env(function() return nil end)
        assert.is_nil(none)
        assert.matches("AWS_ACCESS_KEY_ID", err)
    end)
end)
