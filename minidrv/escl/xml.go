package escl

import (
	"bytes"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"strings"
)

// XML namespaces of eSCL documents.
const (
	// NSPWG is the PWG semantic model namespace (prefix pwg).
	NSPWG = "http://www.pwg.org/schemas/2010/12/sm"
	// NSScan is the eSCL namespace (prefix scan).
	NSScan = "http://schemas.hp.com/imaging/escl/2011/05/03"
)

// eSCL's names for the colour modes, the input source and the units of a
// scan region.
const (
	modeBW    = "BlackAndWhite1"
	modeGray  = "Grayscale8"
	modeColor = "RGB24"

	sourcePlaten = "Platen"
	unitsESCL    = "escl:ThreeHundredthsOfInches"
)

// The document formats the handler encodes.
const (
	// MIMEPNG is a PNG document, encoded with image/png.
	MIMEPNG = "image/png"
	// MIMEJPEG is a JPEG document, encoded with image/jpeg.
	MIMEJPEG = "image/jpeg"
)

// Documents the handler writes. The element names carry their prefix and
// the root declares both namespaces: the usual eSCL spelling, which every
// client reads.

type capabilitiesDoc struct {
	XMLName      xml.Name `xml:"scan:ScannerCapabilities"`
	NSPWG        string   `xml:"xmlns:pwg,attr"`
	NSScan       string   `xml:"xmlns:scan,attr"`
	Version      string   `xml:"pwg:Version"`
	MakeAndModel string   `xml:"pwg:MakeAndModel"`
	SerialNumber string   `xml:"pwg:SerialNumber,omitempty"`
	UUID         string   `xml:"scan:UUID"`
	Platen       struct {
		Caps inputCaps `xml:"scan:PlatenInputCaps"`
	} `xml:"scan:Platen"`
}

type inputCaps struct {
	MinWidth         int            `xml:"scan:MinWidth"`
	MaxWidth         int            `xml:"scan:MaxWidth"`
	MinHeight        int            `xml:"scan:MinHeight"`
	MaxHeight        int            `xml:"scan:MaxHeight"`
	MaxScanRegions   int            `xml:"scan:MaxScanRegions"`
	Profile          settingProfile `xml:"scan:SettingProfiles>scan:SettingProfile"`
	MaxOpticalXRes   int            `xml:"scan:MaxOpticalXResolution"`
	MaxOpticalYRes   int            `xml:"scan:MaxOpticalYResolution"`
	SupportedIntents []string       `xml:"scan:SupportedIntents>scan:Intent"`
}

type settingProfile struct {
	ColorModes  []string     `xml:"scan:ColorModes>scan:ColorMode"`
	Formats     []string     `xml:"scan:DocumentFormats>pwg:DocumentFormat"`
	FormatsExt  []string     `xml:"scan:DocumentFormats>scan:DocumentFormatExt"`
	Resolutions []resolution `xml:"scan:SupportedResolutions>scan:DiscreteResolutions>scan:DiscreteResolution"`
}

type resolution struct {
	X int `xml:"scan:XResolution"`
	Y int `xml:"scan:YResolution"`
}

type statusDoc struct {
	XMLName xml.Name  `xml:"scan:ScannerStatus"`
	NSPWG   string    `xml:"xmlns:pwg,attr"`
	NSScan  string    `xml:"xmlns:scan,attr"`
	Version string    `xml:"pwg:Version"`
	State   string    `xml:"pwg:State"`
	Jobs    []jobInfo `xml:"scan:Jobs>scan:JobInfo"`
}

type jobInfo struct {
	URI              string   `xml:"pwg:JobUri"`
	UUID             string   `xml:"pwg:JobUuid"`
	Age              int      `xml:"scan:Age"`
	ImagesCompleted  int      `xml:"pwg:ImagesCompleted"`
	ImagesToTransfer int      `xml:"pwg:ImagesToTransfer"`
	State            string   `xml:"pwg:JobState"`
	Reasons          []string `xml:"pwg:JobStateReasons>pwg:JobStateReason"`
}

// marshalDoc returns v as an XML document with its declaration.
func marshalDoc(v any) []byte {
	b, err := xml.MarshalIndent(v, "", "  ")
	if err != nil { // the documents are fixed structs: cannot happen
		panic(fmt.Sprintf("escl: marshal %T: %v", v, err))
	}
	return append([]byte(xml.Header), append(b, '\n')...)
}

// scanSettings is a client's scan:ScanSettings, as far as the handler
// reads it. Elements are matched by local name, whatever their namespace
// (clients differ: sane-airscan sends pwg:InputSource, others
// scan:InputSource); unknown elements (Intent, Brightness...) are ignored.
// The values it reads are text (see text).
type scanSettings struct {
	XMLName     xml.Name
	Regions     []scanRegion `xml:"ScanRegions>ScanRegion"`
	InputSource []text       `xml:"InputSource"`
	ColorMode   []text       `xml:"ColorMode"`
	Format      []text       `xml:"DocumentFormat"`
	FormatExt   []text       `xml:"DocumentFormatExt"`
	XResolution []text       `xml:"XResolution"`
	YResolution []text       `xml:"YResolution"`
	Duplex      []text       `xml:"Duplex"`
}

type scanRegion struct {
	Units   []text `xml:"ContentRegionUnits"`
	XOffset []text `xml:"XOffset"`
	YOffset []text `xml:"YOffset"`
	Width   []text `xml:"Width"`
	Height  []text `xml:"Height"`
}

// text is the value of an element of simple content (a number, a
// keyword, a MIME type): its character data, however the XML spells it
// (CDATA sections, character references, comments and processing
// instructions between the pieces, which are not part of the value). An
// element with a child element has no such value and is refused, where
// encoding/xml would skip the child and join the text around it ("7<x/>5"
// read as 75).
type text string

// UnmarshalXML reads the element's character data up to its end, and
// refuses a child element.
func (t *text) UnmarshalXML(d *xml.Decoder, start xml.StartElement) error {
	var b strings.Builder
	for {
		tok, err := d.Token()
		if err != nil {
			return err
		}
		switch tt := tok.(type) {
		case xml.CharData:
			b.Write(tt)
		case xml.Comment, xml.ProcInst:
		case xml.EndElement:
			*t = text(b.String())
			return nil
		case xml.StartElement:
			return fmt.Errorf("%s has a child element %s: its value must be text", start.Name.Local, tt.Name.Local)
		default:
			return fmt.Errorf("%s has a %T: its value must be text", start.Name.Local, tok)
		}
	}
}

// errMalformed marks a request the handler could not parse (400), as
// opposed to settings it parsed and does not support (409).
var errMalformed = errors.New("malformed scan settings")

// uniqueAttrs refuses a document in which an element repeats an
// attribute (the same prefix and name, a namespace declaration included):
// not well-formed XML, which encoding/xml does not check even when
// strict, and whose later value would silently win.
func uniqueAttrs(body []byte) error {
	dec := xml.NewDecoder(bytes.NewReader(body))
	dec.Strict = true
	for {
		tok, err := dec.RawToken()
		if err != nil {
			return nil // the decode that follows reports what is wrong
		}
		start, ok := tok.(xml.StartElement)
		if !ok || len(start.Attr) < 2 {
			continue
		}
		// A set, not pairs: a hostile element may carry many thousands.
		seen := make(map[xml.Name]struct{}, len(start.Attr))
		for _, a := range start.Attr {
			if _, dup := seen[a.Name]; dup {
				return fmt.Errorf("%w: element %s repeats attribute %s", errMalformed, start.Name.Local, qualified(a.Name))
			}
			seen[a.Name] = struct{}{}
		}
	}
}

// qualified writes name as it appears in a document read with RawToken
// (Space holds the prefix).
func qualified(name xml.Name) string {
	if name.Space == "" {
		return name.Local
	}
	return name.Space + ":" + name.Local
}

// utf8BOM is the byte order mark a document may start with.
var utf8BOM = []byte("\ufeff")

// rootElement reads dec's prolog, up to and including the start of the
// root element, which it returns: an XML declaration (only as the very
// first thing), comments, processing instructions, a document type
// declaration and white space may come before the root; anything else
// there (text, CDATA, a second declaration) is not well-formed XML, which
// encoding/xml's Decode would skip.
func rootElement(dec *xml.Decoder) (xml.StartElement, error) {
	for first := true; ; first = false {
		tok, err := dec.Token()
		if errors.Is(err, io.EOF) {
			return xml.StartElement{}, errors.New("no root element")
		}
		if err != nil {
			return xml.StartElement{}, err
		}
		switch t := tok.(type) {
		case xml.StartElement:
			return t, nil
		case xml.ProcInst:
			if t.Target == "xml" && !first {
				return xml.StartElement{}, errors.New("an XML declaration that is not at the start")
			}
		case xml.Comment, xml.Directive:
		case xml.CharData:
			if strings.Trim(string(t), " \t\r\n") != "" {
				return xml.StartElement{}, errors.New("text before the root element")
			}
		default:
			return xml.StartElement{}, fmt.Errorf("%T before the root element", tok)
		}
	}
}

// parseScanSettings decodes one scan:ScanSettings document, body. It
// refuses anything but exactly one well-formed ScanSettings element
// (comments, processing instructions and white space aside).
func parseScanSettings(body []byte) (*scanSettings, error) {
	if err := uniqueAttrs(body); err != nil {
		return nil, err
	}
	dec := xml.NewDecoder(bytes.NewReader(bytes.TrimPrefix(body, utf8BOM)))
	dec.Strict = true
	root, err := rootElement(dec)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", errMalformed, err)
	}
	var s scanSettings
	if err := dec.DecodeElement(&s, &root); err != nil {
		return nil, fmt.Errorf("%w: %v", errMalformed, err)
	}
	if s.XMLName.Local != "ScanSettings" {
		return nil, fmt.Errorf("%w: root element %q, want scan:ScanSettings", errMalformed, s.XMLName.Local)
	}
	if s.XMLName.Space != NSScan {
		return nil, fmt.Errorf("%w: root element in namespace %q, want %q", errMalformed, s.XMLName.Space, NSScan)
	}
	for {
		tok, err := dec.Token()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("%w: after the root element: %v", errMalformed, err)
		}
		switch t := tok.(type) {
		case xml.Comment, xml.ProcInst:
		case xml.CharData:
			if strings.TrimSpace(string(t)) != "" {
				return nil, fmt.Errorf("%w: text after the root element", errMalformed)
			}
		default:
			return nil, fmt.Errorf("%w: content after the root element", errMalformed)
		}
	}
	return &s, nil
}
